"""The notebooks run headless, top to bottom, on tiny settings (as CI runs them)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import JOB_TINY, ROOT, run_script

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-job multirun: something for the sweep and checkpoint notebooks to read."""
    out = tmp_path_factory.mktemp("sweep")
    result = run_script(
        "train.py", "-m", "model.optimizer.lr=1e-4,2e-4", *JOB_TINY, f"hydra.sweep.dir={out}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def execute(name: str, tmp_path: Path) -> nbformat.NotebookNode:
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    NotebookClient(notebook, timeout=300, resources={"metadata": {"path": str(tmp_path)}}).execute()
    return notebook


def _text(notebook: nbformat.NotebookNode) -> str:
    return "".join(
        str(out.get("text", "")) + str(out.get("data", {}).get("text/markdown", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )


def test_quickstart_trains_and_samples(tmp_path: Path) -> None:
    notebook = execute("quickstart.ipynb", tmp_path)
    assert "best val/elbo = " in _text(notebook)


def test_analyse_sweep_reads_a_multirun(
    sweep_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENLAB_SWEEP_DIR", str(sweep_dir))
    text = _text(execute("analyse_sweep.ipynb", tmp_path))
    assert "| job | model.optimizer.lr | status |" in text and "2 jobs; columns:" in text


def test_explore_checkpoint_samples(
    sweep_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENLAB_CKPT", str(sweep_dir / "0" / "checkpoints" / "last.ckpt"))
    notebook = execute("explore_checkpoint.ipynb", tmp_path)
    images = [
        o for c in notebook.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})
    ]
    assert len(images) >= 2  # samples and the latent walk

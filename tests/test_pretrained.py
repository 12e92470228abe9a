"""pretrained/: every shipped checkpoint matches SHA256SUMS, loads and samples; a run exported with
scripts/export_pretrained.py loads by name and by path in eval.py and sample.py, and a corrupt
file or an unknown name is one line. About 25 s on 2 CPU cores."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image

from genlab.checkpoints.load import check_fits, load_model, read_checkpoint
from genlab.checkpoints.pretrained import MAX_BYTES, SUMS, read_sums, sha256
from genlab.errors import CheckpointError, ConfigError
from tests.conftest import ROOT, run_script

pytestmark = pytest.mark.filterwarnings("ignore")

SHIPPED = ROOT / "pretrained"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


export_pretrained = _script("export_pretrained")
results_table = _script("results_table")


# --- what is shipped ---------------------------------------------------------------------------


def test_every_shipped_checkpoint_is_listed() -> None:
    """SHA256SUMS lists exactly the .ckpt files of pretrained/, sorted, each with provenance."""
    sums = read_sums(SHIPPED)
    files = sorted(p.stem for p in SHIPPED.glob("*.ckpt"))
    assert files == sorted(sums), f"pretrained/ holds {files}, {SUMS} lists {sorted(sums)}"
    lines = [line for line in (SHIPPED / SUMS).read_text().splitlines() if line]
    assert lines == sorted(lines, key=lambda line: line.split()[1]), f"{SUMS} is not sorted"
    for name, digest in sums.items():
        provenance = json.loads((SHIPPED / f"{name}.json").read_text())
        assert provenance["sha256"] == digest, f"{name}.json names another file"
        training = provenance["training"]
        assert training["command"].startswith("python train.py") and training["machine"]
        assert training["minutes"] is not None


@pytest.mark.parametrize("name", sorted(read_sums(SHIPPED)))
def test_shipped_checkpoint_loads_and_samples(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GENLAB_PRETRAINED_DIR", raising=False)
    path = SHIPPED / f"{name}.ckpt"
    assert path.stat().st_size <= MAX_BYTES
    assert sha256(path) == read_sums(SHIPPED)[name], f"{path} does not match {SUMS}"
    model, _ = load_model(f"pretrained:{name}")  # the loader of eval.py and sample.py
    with torch.no_grad():
        x = model.sample(16, generator=torch.Generator().manual_seed(0))
    assert x.shape == (16, 1, 28, 28)
    assert torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1


# --- the mechanism, on a tiny run --------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch tiny GAN run (in-process, a few seconds): its last.ckpt."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from genlab.train import run
    from tests.conftest import CONF, tiny_overrides

    out = tmp_path_factory.mktemp("tiny_run")
    overrides = [*tiny_overrides("gan"), "debug=limit", "trainer.max_epochs=1", "test=false"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    run(cfg)
    return out / "checkpoints" / "last.ckpt"


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A pretrained folder of our own, found by the loader (and by eval.py/sample.py)."""
    folder = tmp_path / "pretrained"
    monkeypatch.setenv("GENLAB_PRETRAINED_DIR", str(folder))
    return folder


def _export(tiny_run: Path, folder: Path, name: str = "tiny_gan") -> Path:
    return export_pretrained.export(
        tiny_run, name, folder=folder, command="python train.py model=gan", minutes=0.1
    )


def _error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr, stderr[-2000:]
    return lines[-1]


def test_export_then_load_by_name_and_by_path(tiny_run: Path, folder: Path) -> None:
    path = _export(tiny_run, folder)
    source = read_checkpoint(tiny_run)
    # Slim: weights and config, no optimizer/loop/callback state; far smaller than the run's.
    slim = torch.load(path, map_location="cpu", weights_only=True)
    assert "optimizer_states" not in slim and "loops" not in slim and "callbacks" not in slim
    assert path.stat().st_size < tiny_run.stat().st_size / 2
    assert read_sums(folder) == {"tiny_gan": sha256(path)}
    assert (folder / SUMS).read_text() == f"{sha256(path)}  tiny_gan.ckpt\n"
    provenance = json.loads((folder / "tiny_gan.json").read_text())
    assert provenance["source"]["global_step"] == source["global_step"]
    assert provenance["training"] == {
        "command": "python train.py model=gan",
        "minutes": 0.1,
        "machine": export_pretrained.machine(),
    }
    # The same weights as the run's, by name and by path.
    original, _ = load_model(tiny_run)
    for spec in ("pretrained:tiny_gan", path):
        model, _ = load_model(spec)
        for key, value in original.state_dict().items():
            torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)

    # eval.py by name (a model metric on two test batches: seconds, no feature cache to build)
    result = run_script(
        "eval.py", "ckpt_path=pretrained:tiny_gan", "metrics=[d_acc]", "trainer=cpu",
        "++trainer.limit_test_batches=2", f"hydra.run.dir={folder.parent / 'eval'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((folder.parent / "eval" / "metrics.json").read_text())
    assert report["ckpt_path"] == "pretrained:tiny_gan" and "test/d_real_acc" in report["metrics"]
    # sample.py by path
    out = folder.parent / "samples.npy"
    result = run_script(
        "sample.py", f"ckpt_path={path}", "n=16", f"out={out}", "device=cpu",
        f"hydra.run.dir={folder.parent / 'sample'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    import numpy as np

    x = np.load(out)
    assert x.shape == (16, 1, 28, 28) and np.isfinite(x).all() and 0 <= x.min() <= x.max() <= 1

    # train.py cannot resume from weights only: one line, before any data is loaded
    with pytest.raises(CheckpointError, match=r"holds weights only .*last\.ckpt"):
        check_fits(original, slim, "pretrained:tiny_gan")


def test_corrupt_file_and_unknown_name_are_one_line(tiny_run: Path, folder: Path) -> None:
    path = _export(tiny_run, folder)
    with pytest.raises(CheckpointError, match=r"no pretrained checkpoint named 'nope'.*tiny_gan"):
        load_model("pretrained:nope")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    path.write_bytes(bytes(data))
    for spec in ("pretrained:tiny_gan", path):  # by name and by path
        with pytest.raises(CheckpointError, match=r"does not match its SHA256.*pretrained:tiny"):
            load_model(spec)
    result = run_script(
        "sample.py", "ckpt_path=pretrained:tiny_gan", f"out={folder.parent / 's.png'}",
        f"hydra.run.dir={folder.parent / 'sample'}",
    )  # fmt: skip
    assert result.returncode == 1
    line = _error_line(result.stderr)
    assert line.startswith("genlab: error: pretrained checkpoint ") and "SHA256" in line
    # A bare name that is no file points at the spelling that works.
    path.unlink()
    export_pretrained.export(
        tiny_run, "tiny_gan", folder=folder, command="python train.py", minutes=1
    )
    with pytest.raises(CheckpointError, match=r"write ckpt_path=pretrained:tiny_gan"):
        load_model("tiny_gan")


def test_export_refusals(tiny_run: Path, folder: Path) -> None:
    with pytest.raises(CheckpointError, match=r"over the 0.00 MB limit"):
        export_pretrained.export(
            tiny_run, "big", folder=folder, command="python train.py", minutes=1, max_bytes=1
        )
    with pytest.raises(ConfigError, match=r"file stem"):
        export_pretrained.export(
            tiny_run, "../escape", folder=folder, command="python train.py", minutes=1
        )
    # The run's own run_info.json names pytest, not train.py: the command must be given.
    with pytest.raises(ConfigError, match=r"--command"):
        export_pretrained.export(tiny_run, "x", folder=folder, minutes=1)
    with pytest.raises(ConfigError, match=r"starting with 'python train.py'"):
        export_pretrained.export(tiny_run, "x", folder=folder, command="train it", minutes=1)
    assert not folder.exists() or not list(folder.iterdir()), "a refused export wrote files"
    # The run folder's own provenance is read when it names train.py.
    info = tiny_run.parent.parent / "run_info.json"
    saved = info.read_text()
    try:
        run_info = json.loads(saved)
        run_info["command"] = ["train.py", "model=gan", "hydra.run.dir=somewhere"]
        info.write_text(json.dumps(run_info))
        found = export_pretrained.run_provenance(tiny_run)
        assert found["command"] == "python train.py model=gan" and found["minutes"] >= 0
    finally:
        info.write_text(saved)


def test_results_table_from_cached_scores(
    tiny_run: Path, folder: Path, tmp_path: Path, make_cfg: Callable
) -> None:
    path = _export(tiny_run, folder)
    digest = sha256(path)
    metrics = {"test/fid": 12.345, "test/kid": 0.01234, "test/precision": 0.7,
               "test/recall": 0.6, "test/class_kl": 0.0987}  # fmt: skip
    cached = {"sha256": digest, "eval_args": [], "metrics": metrics, "num_samples": 10000,
              "num_real": 10000, "features": "mnist_classifier-x",
              "command": results_table.eval_command("tiny_gan", folder, [])}  # fmt: skip
    (folder / "tiny_gan.eval.json").write_text(json.dumps(cached))
    results = tmp_path / "docs" / "results.md"
    results.parent.mkdir()
    results.write_text("# Results\n\nsomething else\n")
    figures = results.parent / "figures"
    text = results_table.build(folder=folder, results=results, figures=figures)
    # the cache was fresh: no eval.py; the grid was drawn, 10x10 MNIST images
    assert Image.open(figures / "pretrained_tiny_gan.png").size == (302, 302)
    assert "| `tiny_gan` | `python train.py model=gan` | 0.1 | " in text
    assert (
        "| 12.35 | 0.0123 | 0.70 | 0.60 | 0.099 | \u2013 | \u2013 | \u2013 | "
        "![tiny_gan](figures/pretrained_" in text
    )
    doc = results.read_text()
    assert doc.startswith("# Results\n\nsomething else\n\n## Pretrained checkpoints\n")
    # Rewritten in place between the markers, the rest kept.
    results.write_text(doc + "\n## After\n")
    results_table.build(folder=folder, results=results, figures=figures, table_only=True)
    assert results.read_text().count(results_table.START) == 1
    assert results.read_text().endswith("\n## After\n")
    # Another file under the same name: the cached scores are stale, the row is not written.
    assert results_table.cached_eval("tiny_gan", folder, "0" * 64, []) is None
    assert results_table.cached_eval("tiny_gan", folder, digest, ["nll_samples=10"]) is None
    # The reproduce command composes as eval.py's config (the docs test checks docs/ the same way).
    command = cached["command"]
    assert command.startswith("python eval.py ckpt_path=")
    make_cfg(*command.split()[2:], config_name="eval", tiny=False)

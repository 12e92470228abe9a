"""A sweeper or launcher whose extra (`sweeps`) is not installed: one line naming it, exit 1.

The plugins are installed here (the `dev` extra pulls in `sweeps`); a missing one is simulated by
making ``importlib.util.find_spec`` not find it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from genlab.config.cli import exit_if_plugin_missing
from tests.conftest import CONF, ROOT, run_script

INSTALL = 'pip install -e ".[sweeps]"'


@pytest.fixture
def no_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """As without the `sweeps` extra: no Optuna, no Hydra launcher plugin."""
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None):
        missing = name.startswith("hydra_plugins.") or name == "optuna"
        return None if missing else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def _error(capsys: pytest.CaptureFixture, *argv: str, conf: Path = CONF) -> str:
    with pytest.raises(SystemExit) as exit_info:
        exit_if_plugin_missing(conf, "train", list(argv))
    assert exit_info.value.code == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize(
    ("override", "what"),
    [
        ("hparams_search=gan_optuna", "the Optuna sweeper"),
        ("hparams_search=wgan_gp_optuna", "the Optuna sweeper"),  # through its `- gan_optuna`
        ("+hydra/sweeper=genlab_optuna", "the Optuna sweeper"),
        ("hydra/launcher=joblib", "the joblib launcher"),
        ("hydra/launcher=submitit_local", "the submitit launcher"),
        ("hydra/launcher=submitit_slurm", "the submitit launcher"),
        ("hydra/launcher=slurm", "the submitit launcher"),  # conf/hydra/launcher/slurm.yaml
    ],
)
def test_missing_plugin_is_one_line_naming_the_extra(
    no_plugins: None, capsys: pytest.CaptureFixture, override: str, what: str
) -> None:
    line = _error(capsys, "-m", override, "trainer.max_epochs=1")
    assert line == f"genlab: error: {override.lstrip('+')} needs {what}: {INSTALL}"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["-m", "model=gan,vae", "model.optimizer.lr=1e-4,2e-4"],  # the basic launcher: built in
        ["experiment=data_scaling"],  # a multirun through the basic sweeper
        ["experiment=dcgan_mnist", "hparams_search=null", "hydra.launcher.n_jobs=2"],
        ["~hydra/launcher"],
    ],
)
def test_runs_without_plugins_are_not_stopped(no_plugins: None, argv: list[str]) -> None:
    exit_if_plugin_missing(CONF, "train", argv)


def test_installed_plugins_pass() -> None:
    exit_if_plugin_missing(CONF, "train", ["-m", "hparams_search=gan_optuna"])
    exit_if_plugin_missing(CONF, "train", ["-m", "hydra/launcher=slurm"])


def _write(path: Path, defaults: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"defaults": defaults}))


def test_configs_that_select_a_plugin_are_followed(
    no_plugins: None, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    # An experiment that turns on a search, and a primary config whose defaults pick a launcher.
    _write(tmp_path / "train.yaml", ["_self_", {"experiment": None}])
    _write(tmp_path / "other.yaml", ["_self_", {"override hydra/launcher": "joblib"}])
    _write(tmp_path / "experiment" / "search.yaml", [{"override /hparams_search": "gan_optuna"}])
    _write(
        tmp_path / "hparams_search" / "gan_optuna.yaml",
        [{"override /hydra/sweeper": "genlab_optuna"}],
    )
    line = _error(capsys, "experiment=search", conf=tmp_path)
    assert line == f"genlab: error: experiment=search needs the Optuna sweeper: {INSTALL}"
    line = _error(capsys, "-cn", "other", conf=tmp_path)
    assert line == f"genlab: error: hydra/launcher=joblib needs the joblib launcher: {INSTALL}"
    exit_if_plugin_missing(tmp_path, "train", [])  # train.yaml selects nothing of the kind
    # The command line replaces the primary config's choice for that group.
    exit_if_plugin_missing(tmp_path, "other", ["hydra/launcher=basic"])


def test_train_py_stops_before_hydra_with_one_line() -> None:
    # The entry point as a user runs it, in a process where the Optuna sweeper is not found.
    code = (
        "import importlib.util, runpy, sys\n"
        "real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda name, package=None: (\n"
        "    None if name == 'optuna' else real(name, package))\n"
        "sys.argv = ['train.py', '-m', 'hparams_search=gan_optuna', 'experiment=dcgan_mnist']\n"
        f"runpy.run_path({str(ROOT / 'train.py')!r}, run_name='__main__')\n"
    )
    result = run_script("-c", code)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"genlab: error: hparams_search=gan_optuna needs the Optuna sweeper: {INSTALL}"
    ]


def test_training_needs_no_optuna() -> None:
    # Optuna is the `sweeps` extra: the core install must still import the training task.
    code = "import sys\nsys.modules['optuna'] = None\nimport genlab.train, genlab.sweeps\n"
    result = run_script("-c", code)
    assert result.returncode == 0, result.stderr[-2000:]

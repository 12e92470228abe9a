"""Exact resume: a run stopped by SIGTERM mid-epoch and resumed equals one that never stopped."""

from __future__ import annotations

import csv
import json
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from genlab.train import run
from tests.conftest import run_script

# Three short epochs (a whole one after the interrupted one), augmentation on (its randomness
# must survive the restart too), a loss row on every batch.
SHORT = [
    "trainer.max_epochs=3",
    "++trainer.limit_train_batches=6",
    "++trainer.limit_val_batches=2",
    "++trainer.log_every_n_steps=1",
    "++trainer.deterministic=true",
    "data.augment=true",
    "test=false",
]


def _losses(run_dir: Path) -> list[tuple[str, dict[str, str]]]:
    """The logged training values, (step, {metric: value}) per row in file order. A resumed run
    drops the rows of the batches it trains again, so no metric is logged twice for a step
    (a step may have two rows: its batch's and an epoch's, e.g. DP's train/epsilon)."""
    with open(run_dir / "metrics.csv") as f:
        rows = [
            (r["step"], {k: v for k, v in r.items() if k.startswith("train/") and v})
            for r in csv.DictReader(f)
        ]
    rows = [(step, values) for step, values in rows if values]
    logged = Counter((step, k) for step, values in rows for k in values)
    twice = sorted(x for x, n in logged.items() if n > 1)
    assert not twice, f"logged twice in {run_dir / 'metrics.csv'}: {twice[:5]}"
    return rows


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def _train_straight(make_cfg, tmp_path: Path, model: str, *extra: str) -> Path:
    straight = make_cfg(f"model={model}", *SHORT, *extra)
    with open_dict(straight):
        straight.paths.output_dir = str(tmp_path / "straight")
    run(straight)
    return tmp_path / "straight"


def _assert_same_run(a_dir: Path, b_dir: Path) -> None:
    a, b = _weights(a_dir), _weights(b_dir)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"weights differ after resume: {different[:5]}"
    assert _losses(a_dir) == _losses(b_dir)


@pytest.mark.parametrize(
    ("model", "extra"),
    [
        ("gan", []),
        ("vae", []),
        ("dcgan", ["privacy.enabled=true"]),
        # The sums of the epoch it stops in are buffers, and that epoch is the last: its fit
        # is in the final checkpoint.
        ("cvae", ["model.ex_post_prior=true", "trainer.max_epochs=2"]),
    ],
    ids=["gan", "vae", "dp_gan", "cvae_ex_post"],
)
def test_sigterm_mid_epoch_then_resume_is_bit_exact(
    make_cfg, tmp_path: Path, model: str, extra: list[str]
) -> None:
    """DP too: Poisson batches, DP noise (global RNG) and the privacy accountant resume."""
    straight = _train_straight(make_cfg, tmp_path, model, *extra)
    stopped = make_cfg(
        f"model={model}",
        *SHORT,
        *extra,
        "+callbacks.sigterm._target_=tests.fault_injection.SignalAt",
        "+callbacks.sigterm.epoch=1",
        "+callbacks.sigterm.batch=2",
    )
    with open_dict(stopped):
        stopped.paths.output_dir = str(tmp_path / "stopped")
    with pytest.raises(SystemExit) as stop:
        run(stopped)
    assert stop.value.code == 143
    ckpt = torch.load(tmp_path / "stopped" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["processed"] == 3

    run(make_cfg(f"model={model}", f"resume={tmp_path / 'stopped'}"))
    _assert_same_run(straight, tmp_path / "stopped")
    if "privacy.enabled=true" in extra:
        privacy = [
            torch.load(d / "checkpoints" / "last.ckpt", weights_only=True)["privacy"]
            for d in (straight, tmp_path / "stopped")
        ]
        assert privacy[0] == privacy[1]


def test_sigterm_during_validation_keeps_training_exact(make_cfg, tmp_path: Path) -> None:
    """The resumed run repeats the interrupted validation (tests/test_stop_in_validation.py);
    since validation draws from its own seeds, the training that follows is still bit-exact."""
    straight = _train_straight(make_cfg, tmp_path, "vae")
    stopped = make_cfg(
        "model=vae",
        *SHORT,
        "+callbacks.sigterm._target_=tests.fault_injection.SignalInValidation",
        "+callbacks.sigterm.epoch=1",
    )
    with open_dict(stopped):
        stopped.paths.output_dir = str(tmp_path / "stopped")
    with pytest.raises(SystemExit):
        run(stopped)
    run(make_cfg("model=vae", f"resume={tmp_path / 'stopped'}"))
    a, b = _weights(straight), _weights(tmp_path / "stopped")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _losses(straight) == _losses(tmp_path / "stopped")


def test_ctrl_c_stops_after_the_batch_with_a_checkpoint(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg(
        *SHORT,
        "+callbacks.ctrl_c._target_=tests.fault_injection.SignalAt",
        "+callbacks.ctrl_c.epoch=0",
        "+callbacks.ctrl_c.batch=3",
        "+callbacks.ctrl_c.signum=SIGINT",
    )
    with pytest.raises(SystemExit) as stop:
        run(cfg)
    assert stop.value.code == 143
    ckpt = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["processed"] == 4
    result = json.loads((Path(cfg.paths.output_dir) / "result.json").read_text())
    assert result["status"] == "interrupted"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler put back


def test_crash_resumes_from_the_periodic_checkpoint_bit_exact(make_cfg, tmp_path: Path) -> None:
    straight = _train_straight(make_cfg, tmp_path, "gan")
    crashed = make_cfg(
        *SHORT,
        "checkpoint_every_n_batches=2",
        "+callbacks.crash._target_=tests.fault_injection.CrashAt",
        "+callbacks.crash.epoch=1",
        "+callbacks.crash.batch=5",
    )
    with open_dict(crashed):
        crashed.paths.output_dir = str(tmp_path / "crashed")
    with pytest.raises(RuntimeError, match="injected crash"):
        run(crashed)
    ckpt = torch.load(tmp_path / "crashed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] == 1  # mid-epoch, after batch 3: batch 4 is redone on resume
    run(make_cfg(f"resume={tmp_path / 'crashed'}"))  # CrashAt fires only in the first life
    _assert_same_run(straight, tmp_path / "crashed")


@pytest.mark.slow
def test_train_py_killed_with_sigterm_then_resumed_ends_like_an_uninterrupted_run(
    tmp_path: Path,
) -> None:
    """The README's experiment, as a user runs it: real processes, a real signal."""
    result = run_script(
        # The VAE: its reconstruction grid reads a validation batch the first time it runs, which
        # in a resumed process is an epoch later (this caught a global-RNG draw there).
        "scripts/kill_and_resume.py",
        "--model",
        "vae",
        "--tiny",
        "--delay",
        "0.3",
        "--out",
        str(tmp_path),
        timeout=900,  # three train.py runs: ~1 min alone, far longer on a shared machine
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "exit 143" in result.stdout
    assert "final weights identical: True; metrics identical: True" in result.stdout


def test_same_seed_same_run_and_run_info(make_cfg, tmp_path: Path) -> None:
    first = _train_straight(make_cfg, tmp_path / "a", "gan")
    second = _train_straight(make_cfg, tmp_path / "b", "gan")
    _assert_same_run(first, second)
    info = json.loads((first / "run_info.json").read_text())
    assert len(info["git_commit"]) == 40 and isinstance(info["git_dirty"], bool)
    assert info["packages"]["torch"] == torch.__version__.split("+")[0]
    assert info["packages"]["pytorch-lightning"]


def test_resume_latest_picks_the_newest_run(make_cfg, tmp_path: Path) -> None:
    from genlab.resume.command import latest_run

    runs = tmp_path / "train" / "runs"
    for name in ("2026-01-01_00-00-00", "2026-01-02_00-00-00"):
        (runs / name / "checkpoints").mkdir(parents=True)
        (runs / name / "checkpoints" / "last.ckpt").write_bytes(b"x")
        time.sleep(0.01)  # distinct modification times
    (runs / "2026-01-03_00-00-00").mkdir()  # newer, but nothing to resume
    assert latest_run(runs) == runs / "2026-01-02_00-00-00"


def test_checkpoint_writes_are_atomic(tmp_path: Path, monkeypatch) -> None:
    """A kill while last.ckpt is rewritten leaves the previous last.ckpt whole."""
    from io import FileIO

    import genlab.checkpoints.io as checkpoint_module
    from genlab.checkpoints.io import AtomicCheckpointIO

    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(1000)}, path)

    class KilledMidWrite(FileIO):
        def write(self, data) -> int:  # type: ignore[override]
            super().write(bytes(data)[:100])
            raise KeyboardInterrupt  # the process dies here

    monkeypatch.setattr(
        checkpoint_module, "open", lambda file, mode: KilledMidWrite(file, "w"), raising=False
    )
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2, "w": torch.zeros(1000)}, path)
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary left behind

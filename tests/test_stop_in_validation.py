"""A run stopped during an epoch's validation (SIGTERM, once or more, or a crash) repeats that
validation on resume: metrics.csv, the best and per-epoch checkpoints and result.json equal an
uninterrupted run's. And a metrics.csv deleted mid-run comes back whole."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from genlab.checkpoints.keys import VALIDATION_PENDING_KEY
from genlab.loggers.metrics_csv import ResumableCSVLogger
from genlab.train import run

SHORT = [
    "++trainer.limit_train_batches=3",
    "++trainer.limit_val_batches=2",  # the stop comes after the first of the two
    "++trainer.limit_test_batches=2",
    "++trainer.log_every_n_steps=1",
    "++trainer.deterministic=true",
]
# Timings differ between any two runs.
_TIMING = "_seconds"


def _run_until_stopped(cfg, code: int | type[BaseException]) -> None:
    if isinstance(code, int):
        with pytest.raises(SystemExit) as stop:
            run(cfg)
        assert stop.value.code == code
    else:
        with pytest.raises(code):
            run(cfg)


def _config(make_cfg, run_dir: Path, model: str, *overrides: str):
    cfg = make_cfg(f"model={model}", *SHORT, *overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
    return cfg


def _resume(make_cfg, run_dir: Path, model: str) -> None:
    run(make_cfg(f"model={model}", f"resume={run_dir}"))


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if v != ""} for r in csv.DictReader(f)]


def _assert_same_values(a: dict, b: dict, where: str) -> None:
    """The same keys exactly; the same values up to float noise (timings aside)."""
    assert a.keys() == b.keys(), f"{where}: keys {sorted(set(a) ^ set(b))}"
    for key in a:
        if not key.endswith(_TIMING):
            assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-5, abs=1e-6), (where, key)


def _checkpoint(run_dir: Path, name: str) -> dict:
    return torch.load(run_dir / "checkpoints" / name, weights_only=True)


def _loop_state(run_dir: Path) -> dict:
    """last.ckpt's loop counters. Not the training loader's position: a run resumed into the
    validation of a trained epoch sets up that epoch's loader without training on it, and
    Lightning reads the position only when batches of the epoch remain to train."""
    loops = _checkpoint(run_dir, "last.ckpt")["loops"]
    loops["fit_loop"].pop("state_dict")
    return loops


def _assert_same_run(straight: Path, stopped: Path) -> None:
    a_rows, b_rows = _rows(straight), _rows(stopped)
    assert [(r.get("epoch"), r["step"], sorted(r)) for r in b_rows] == [
        (r.get("epoch"), r["step"], sorted(r)) for r in a_rows
    ]
    for a, b in zip(a_rows, b_rows, strict=True):
        _assert_same_values(a, b, f"metrics.csv step {a['step']}")

    names = sorted(p.name for p in (straight / "checkpoints").iterdir())
    assert sorted(p.name for p in (stopped / "checkpoints").iterdir()) == names
    for name in names:  # the best epochNNN.ckpt and last.ckpt hold the same weights
        a, b = _checkpoint(straight, name)["state_dict"], _checkpoint(stopped, name)["state_dict"]
        assert [k for k in a if not torch.equal(a[k], b[k])] == [], name
    assert _loop_state(stopped) == _loop_state(straight)

    a_result, b_result = (json.loads((d / "result.json").read_text()) for d in (straight, stopped))
    assert b_result["status"] == "ok"
    assert Path(b_result["best_model_path"]).name == Path(a_result["best_model_path"]).name
    assert b_result["best_score"] == pytest.approx(a_result["best_score"], rel=1e-5)
    _assert_same_values(a_result["metrics"], b_result["metrics"], "result.json metrics")


def test_vae_stopped_in_its_last_validation_resumes_into_it(make_cfg, tmp_path: Path) -> None:
    """The VAE's val/elbo improves in epoch 1: a lost validation there would make epoch 0's
    checkpoint the best, test it, and report its score."""
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    run(_config(make_cfg, straight, "vae", "trainer.max_epochs=2"))
    assert Path(json.loads((straight / "result.json").read_text())["best_model_path"]).name == (
        "epoch001.ckpt"
    )

    _run_until_stopped(
        _config(
            make_cfg,
            stopped,
            "vae",
            "trainer.max_epochs=2",
            "+callbacks.sigterm._target_=tests.fault_injection.SignalInValidation",
            "+callbacks.sigterm.epoch=1",
        ),
        143,
    )
    ckpt = _checkpoint(stopped, "last.ckpt")
    assert ckpt[VALIDATION_PENDING_KEY] is True
    result = json.loads((stopped / "result.json").read_text())
    assert result["status"] == "interrupted"

    _resume(make_cfg, stopped, "vae")
    _assert_same_run(straight, stopped)


def test_gan_stopped_twice_in_validation_with_repeated_signals(make_cfg, tmp_path: Path) -> None:
    """Two SIGTERMs in epoch 0's validation and a third while the checkpoint is written; the
    resumed run is stopped again in the validation it repeats; the next one trains on after
    it (epoch 1)."""
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    common = ["trainer.max_epochs=2", "test=false"]
    run(_config(make_cfg, straight, "gan", *common))

    _run_until_stopped(
        _config(
            make_cfg,
            stopped,
            "gan",
            *common,
            "+callbacks.sigterm._target_=tests.fault_injection.SignalInValidation",
            "+callbacks.sigterm.epoch=0",
            "+callbacks.sigterm.signals=2",
            "+callbacks.sigterm.lives=2",
            "+callbacks.again._target_=tests.fault_injection.SignalWhileStopping",
        ),
        143,
    )
    with pytest.raises(SystemExit) as again:  # stopped in the repeated validation too
        _resume(make_cfg, stopped, "gan")
    assert again.value.code == 143
    assert _checkpoint(stopped, "last.ckpt")[VALIDATION_PENDING_KEY] is True

    _resume(make_cfg, stopped, "gan")
    _assert_same_run(straight, stopped)


def test_crash_in_validation_after_a_periodic_checkpoint(make_cfg, tmp_path: Path) -> None:
    """checkpoint_every_n_batches is not written between an epoch's last batch and its
    validation: resumed from there, Lightning would skip that validation."""
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    common = [
        "trainer.max_epochs=2",
        "test=false",
        "callbacks.fid=null",
        "checkpoint_every_n_batches=1",
    ]
    run(_config(make_cfg, straight, "vae", *common))

    _run_until_stopped(
        _config(
            make_cfg,
            crashed,
            "vae",
            *common,
            "+callbacks.crash._target_=tests.fault_injection.CrashInValidation",
            "+callbacks.crash.epoch=1",
        ),
        RuntimeError,
    )
    # The last periodic checkpoint: after batch 1 of epoch 1, not after batch 2 (its last).
    progress = _checkpoint(crashed, "last.ckpt")["loops"]["fit_loop"]["epoch_loop.batch_progress"]
    assert progress["current"]["processed"] == 2

    _resume(make_cfg, crashed, "vae")
    _assert_same_run(straight, crashed)


# --- metrics.csv deleted while the run writes it --------------------------------------------


def test_deleted_metrics_csv_is_rewritten_whole(tmp_path: Path, caplog) -> None:
    logger = ResumableCSVLogger(tmp_path)
    for step in range(3):
        logger.log_metrics({"train/loss": step + 0.5}, step=step)
    logger.save()
    (tmp_path / "metrics.csv").unlink()
    logger.log_metrics({"train/loss": 3.5}, step=3)
    with caplog.at_level(logging.WARNING, logger="genlab.loggers"):
        logger.save()
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / 'metrics.csv'} was deleted during the run: rewrote it with its header and "
        "the 3 rows logged so far"
    ]
    assert _rows(tmp_path) == [{"step": str(s), "train/loss": f"{s + 0.5}"} for s in range(4)]

    # Deleted again, and then a new metric (a new header) arrives: still every row.
    (tmp_path / "metrics.csv").unlink()
    logger.log_metrics({"val/loss": 9.0}, step=3)
    logger.finalize("success")
    rows = _rows(tmp_path)
    assert [r["step"] for r in rows] == ["0", "1", "2", "3", "3"]
    assert rows[-1] == {"step": "3", "val/loss": "9.0"}


def test_metrics_csv_deleted_during_a_run(make_cfg, tmp_path: Path, caplog) -> None:
    cfg = make_cfg(
        "model=vae",
        *SHORT,
        "trainer.max_epochs=1",
        "test=false",
        "callbacks.fid=null",
        "+callbacks.rm._target_=tests.fault_injection.DeleteFileAt",
        "+callbacks.rm.epoch=0",
        "+callbacks.rm.batch=1",
        "+callbacks.rm.path=${paths.output_dir}/metrics.csv",
    )
    with caplog.at_level(logging.WARNING, logger="genlab.loggers"):
        run(cfg)
    assert len([r for r in caplog.records if "was deleted during the run" in r.getMessage()]) == 1
    rows = _rows(Path(cfg.paths.output_dir))
    assert [r["step"] for r in rows if "train/elbo" in r] == ["0", "1", "2"]  # each batch's, once
    assert [r["step"] for r in rows if "val/elbo" in r] == ["2"]

"""Exact resume: a run stopped by SIGTERM mid-epoch and resumed equals one that never stopped."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from genlab.train import run

# Two short epochs, augmentation on (its randomness must survive the restart too), a loss row
# on every batch.
SHORT = [
    "trainer.max_epochs=2",
    "++trainer.limit_train_batches=6",
    "++trainer.limit_val_batches=2",
    "++trainer.log_every_n_steps=1",
    "++trainer.deterministic=true",
    "data.augment=true",
    "test=false",
]


def _losses(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if any(r[k] for k in r if k.startswith("train/"))]
    return [{k: v for k, v in r.items() if k.startswith("train/") or k == "step"} for r in rows]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


@pytest.mark.parametrize("model", ["gan", "vae"])
def test_sigterm_mid_epoch_then_resume_is_bit_exact(make_cfg, tmp_path: Path, model: str) -> None:
    straight = make_cfg(f"model={model}", *SHORT)
    with open_dict(straight):
        straight.paths.output_dir = str(tmp_path / "straight")
    run(straight)

    stopped = make_cfg(
        f"model={model}",
        *SHORT,
        "+callbacks.sigterm._target_=tests.fault_injection.SigtermAt",
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

    resumed = make_cfg(f"model={model}", f"resume={tmp_path / 'stopped'}")
    run(resumed)

    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "stopped")
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"weights differ after resume: {different[:5]}"
    assert _losses(tmp_path / "straight") == _losses(tmp_path / "stopped")

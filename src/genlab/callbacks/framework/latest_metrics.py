"""What ``GenerativeModel.log_latest`` kept: logged on every logging step, saved in checkpoints.

A metric computed on only some batches (a lazy penalty, one batch in 16) would go stale if
logged directly: Lightning re-logs a step metric's last value at every later logging step of
the epoch, and a run resumed mid-epoch lacks that value, so its metrics CSV would differ from an
uninterrupted run's. The model keeps the latest values in ``latest_metrics`` (a dict of
tensors); this callback logs them on each logging step and carries them through checkpoints.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from genlab.checkpoints.keys import LATEST_METRICS_KEY
from genlab.models.base import is_logging_step


def _latest(pl_module: pl.LightningModule) -> dict[str, torch.Tensor] | None:
    return getattr(pl_module, "latest_metrics", None)


class LatestMetrics(Callback):
    def on_train_batch_end(
        self, trainer: pl.Trainer | None, pl_module: pl.LightningModule, outputs: Any,
        batch: Any, batch_idx: int,
    ) -> None:  # fmt: skip
        latest = _latest(pl_module)
        if latest and is_logging_step(trainer, batch_idx):
            for name, value in latest.items():
                pl_module.log(name, value)

    def on_save_checkpoint(
        self, trainer: pl.Trainer | None, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        latest = _latest(pl_module)
        if latest:
            checkpoint[LATEST_METRICS_KEY] = {k: v.cpu() for k, v in latest.items()}

    def on_load_checkpoint(
        self, trainer: pl.Trainer | None, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if _latest(pl_module) is None:  # a model without log_latest
            return
        saved = checkpoint.get(LATEST_METRICS_KEY, {})
        pl_module.latest_metrics = {k: v.to(pl_module.device) for k, v in saved.items()}

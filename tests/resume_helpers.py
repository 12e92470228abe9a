"""Callbacks the resume tests inject through the config (``+callbacks.x._target_=...``)."""

from __future__ import annotations

import os
import signal

import pytorch_lightning as pl


class SigtermAt(pl.Callback):
    """Send this process SIGTERM after training batch ``batch`` of ``epoch`` (as SLURM would)."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            os.kill(os.getpid(), signal.SIGTERM)

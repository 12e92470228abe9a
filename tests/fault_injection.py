"""Faults the reliability tests inject through the config (``+callbacks.x._target_=...``)."""

from __future__ import annotations

import os
import signal

import pytorch_lightning as pl
import torch


class SignalAt(pl.Callback):
    """Send this process ``signum`` (SIGTERM as SLURM would, or SIGINT as Ctrl-C does) after
    training batch ``batch`` of ``epoch``."""

    def __init__(self, epoch: int, batch: int, signum: str = "SIGTERM") -> None:
        self.epoch, self.batch, self.signum = epoch, batch, getattr(signal, signum)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            os.kill(os.getpid(), self.signum)


class SignalInValidation(pl.Callback):
    """SIGTERM after the first validation batch of ``epoch`` (not during the sanity check)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *_) -> None:
        if not trainer.sanity_checking and trainer.current_epoch == self.epoch and batch_idx == 0:
            os.kill(os.getpid(), signal.SIGTERM)


class PoisonWeightsAt(pl.Callback):
    """Make the first parameter NaN when ``epoch`` starts: the run must diverge right there."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("nan"))


class CrashAt(pl.Callback):
    """Raise (a crash, a kill -9) before training batch ``batch`` of ``epoch``, unless the run
    was resumed from a checkpoint (it crashes once)."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.ckpt_path is None and (trainer.current_epoch, batch_idx) == (
            self.epoch,
            self.batch,
        ):
            raise RuntimeError("injected crash")

"""Faults the reliability tests inject through the config (``+callbacks.x._target_=...``)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

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
    """SIGTERM after validation batch ``batch`` of ``epoch`` (not during the sanity check):
    ``signals`` of them at once (a scheduler that signals twice), in the first ``lives`` runs
    of a run and its resumes (the count travels in the checkpoints, as the config does)."""

    def __init__(self, epoch: int, batch: int = 0, signals: int = 1, lives: int = 1) -> None:
        self.epoch, self.batch, self.signals, self.lives = epoch, batch, signals, lives
        self.fired = 0  # runs stopped so far

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *_) -> None:
        if trainer.sanity_checking or self.fired >= self.lives:
            return
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            self.fired += 1
            for _ in range(self.signals):
                os.kill(os.getpid(), signal.SIGTERM)

    def state_dict(self) -> dict[str, int]:
        return {"fired": self.fired}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.fired = state_dict["fired"]


class SignalWhileStopping(pl.Callback):
    """Another SIGTERM while the first one's checkpoint is being written (a scheduler that
    signals again, an impatient user)."""

    def __init__(self) -> None:
        self.sent = False

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if trainer.interrupted and not self.sent:
            self.sent = True
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


class CrashInValidation(pl.Callback):
    """Raise (a crash, a kill -9) after the first validation batch of ``epoch`` (not in the
    sanity check), unless the run was resumed from a checkpoint (it crashes once)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *_) -> None:
        first_life = trainer.ckpt_path is None and not trainer.sanity_checking
        if first_life and (trainer.current_epoch, batch_idx) == (self.epoch, 0):
            raise RuntimeError("injected crash")


class DeleteFileAt(pl.Callback):
    """Delete ``path`` after training batch ``batch`` of ``epoch`` (a clean-up script, a user)."""

    def __init__(self, epoch: int, batch: int, path: str) -> None:
        self.epoch, self.batch, self.path = epoch, batch, Path(path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            self.path.unlink()


class RequeueAt(pl.Callback):
    """``scontrol requeue`` this SLURM job (what pre-emption with PreemptMode=REQUEUE does) after
    training batch ``batch`` of ``epoch``, or after validation batch ``batch`` of ``epoch`` with
    ``in_validation``; then wait for SLURM's SIGTERM there, so the stop lands at that point.
    Once per run: the count travels in the checkpoints. ``on_start=k``: only in the job's
    k-th start (``SLURM_RESTART_COUNT``), for a run whose checkpoints do not survive."""

    def __init__(
        self, epoch: int, batch: int, in_validation: bool = False, on_start: int | None = None
    ) -> None:
        self.epoch, self.batch, self.in_validation = epoch, batch, in_validation
        self.on_start = on_start
        self.fired = 0

    @property
    def state_key(self) -> str:  # two of them in one run keep their own counts
        return self._generate_state_key(
            epoch=self.epoch, batch=self.batch, in_validation=self.in_validation
        )

    def _maybe(self, trainer, batch_idx: int) -> None:
        if self.fired or (trainer.current_epoch, batch_idx) != (self.epoch, self.batch):
            return
        start = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
        if self.on_start is not None and start != self.on_start:
            return
        self.fired = 1
        import subprocess
        import time

        from genlab.resume.slurm import batch_job

        # batch_job's id: <array id>_<task id> for an array task (a submitit job), whose plain
        # SLURM_JOB_ID may name another task of the array.
        job = batch_job()
        assert job is not None, "RequeueAt runs in a SLURM batch job only"
        subprocess.run(["scontrol", "requeue", job.job_id], check=True)
        deadline = time.monotonic() + 60
        while not trainer.received_sigterm and time.monotonic() < deadline:
            time.sleep(0.1)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if not self.in_validation:
            self._maybe(trainer, batch_idx)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *_) -> None:
        if self.in_validation and not trainer.sanity_checking:
            self._maybe(trainer, batch_idx)

    def state_dict(self) -> dict[str, int]:
        return {"fired": self.fired}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.fired = state_dict["fired"]


class SlowBatches(pl.Callback):
    """Sleep after each training batch: a run long enough for a time limit to cut it.
    ``first_start_only``: not in a requeued SLURM job (``SLURM_RESTART_COUNT`` > 0)."""

    def __init__(self, seconds: float, first_start_only: bool = False) -> None:
        self.seconds = seconds
        self.first_start_only = first_start_only

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        import time

        from genlab.resume.slurm import batch_job

        if self.first_start_only and (job := batch_job()) is not None and job.restarts > 0:
            return
        time.sleep(self.seconds)

"""Stop on SIGTERM or Ctrl-C with a checkpoint to resume from; optionally checkpoint every N batches.

    kill -TERM <pid>          # or a SLURM pre-emption, or Ctrl-C once
    python train.py resume=outputs/train/runs/<time>     # continues exactly

On SIGTERM Lightning sets a flag and stops after the batch in flight; Ctrl-C does the same here
(press it twice to stop at once, without a checkpoint). The callback then writes ``last.ckpt``
(mid-epoch: the resumable loader and ``RNGStates`` make the rest of the epoch identical) and
flushes the loggers, so no finished batch is lost. ``every_n_batches`` (``train.py
checkpoint_every_n_batches=N``) rewrites ``last.ckpt`` during long epochs too: a SIGKILL or a
crash then costs at most that many batches.

A signal during an epoch's validation stops it after the validation batch in flight; the
checkpoint records that validation as not yet run, and the resumed run repeats it whole
(``genlab.resume.progress``). A second SIGTERM meanwhile changes nothing: Lightning's handler
only sets its flag again until the checkpoint is written.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.exceptions import SIGTERMException

from genlab.errors import ConfigError
from genlab.resume.progress import BatchProgress
from genlab.resume.slurm import WARNING_SIGNALS, batch_job, pending_warning

log = logging.getLogger(__name__)


class CheckpointOnInterrupt(Callback):
    def __init__(
        self,
        dirpath: str | Path,
        progress: BatchProgress,
        filename: str = "last.ckpt",
        every_n_batches: int | None = None,
    ) -> None:
        if every_n_batches is not None and every_n_batches < 1:
            raise ConfigError(
                f"checkpoint_every_n_batches={every_n_batches}: use a positive number "
                "of training batches, or null for end-of-epoch checkpoints only."
            )
        self.path = Path(dirpath) / filename
        self.progress = progress
        self.every_n_batches = every_n_batches
        self._previous_handlers: dict[int, Any] = {}

    # --- Ctrl-C: a graceful stop first, an immediate one on the second press ------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not _in_main_thread():
            return
        if trainer.world_size == 1:
            self._install(signal.SIGINT, self._on_sigint)
        if batch_job() is not None:
            # A SLURM job's warning before its time limit: the same graceful stop, then
            # train.run requeues the job (genlab.resume.slurm). It replaces submitit's own
            # handler, which would requeue at once, without a checkpoint.
            for signum in WARNING_SIGNALS:
                self._install(signum, self._on_warning_signal)
            early = pending_warning()
            if early is not None:  # it came before training: stop after the first batch
                self._on_warning_signal(early, None)

    def _install(self, signum: int, handler: Any) -> None:
        self._previous_handlers.setdefault(signum, signal.signal(signum, handler))

    def _on_sigint(self, signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the next Ctrl-C raises
        log.warning("Ctrl-C: stopping after this batch and saving a checkpoint (again: now).")
        os.kill(os.getpid(), signal.SIGTERM)  # Lightning's own graceful stop

    def _on_warning_signal(self, signum: int, frame: Any) -> None:
        log.warning(
            "%s: the SLURM job is about to be stopped; stopping after this batch with a "
            "checkpoint, then requeueing.",
            signal.Signals(signum).name,
        )
        os.kill(os.getpid(), signal.SIGTERM)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}

    # --- checkpoints ------------------------------------------------------------------------
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if not self.every_n_batches or (batch_idx + 1) % self.every_n_batches:
            return
        # Not right before a validation: Lightning resumes from a checkpoint written between a
        # batch and its validation past that validation (a crash in it would cost the epoch's
        # row and best checkpoint). last.ckpt is written after the validation anyway.
        if not _validation_may_follow(trainer, batch_idx, self.progress.total):
            trainer.save_checkpoint(self.path, weights_only=False)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != TrainerFn.FITTING:
            # A crash or a hard Ctrl-C may hit mid-step, with D updated and G not: the state is
            # not one to resume from, so the last good last.ckpt is kept as it is.
            return
        # Stopped inside an epoch's validation (not the sanity check): the checkpoint records it
        # as not yet run, so the resumed run repeats it (genlab.resume.progress).
        self.progress.stopping_in_validation = trainer.validating
        try:
            trainer.save_checkpoint(self.path, weights_only=False)
        finally:
            self.progress.stopping_in_validation = False
        for logger in trainer.loggers:
            logger.finalize("interrupted")
        where = (
            f"during epoch {trainer.current_epoch}'s validation (it runs again on resume)"
            if trainer.validating
            else f"in epoch {trainer.current_epoch} after {self.progress.batches} batches"
        )
        run_dir = self.path.parent.parent if self.path.parent.name == "checkpoints" else self.path
        log.warning(
            "Stopped by a signal %s. Checkpoint: %s. Resume with: python train.py resume=%s",
            where,
            self.path,
            shlex.quote(str(run_dir)),  # a path with spaces stays one argument when pasted
        )


def _validation_may_follow(trainer: pl.Trainer, batch_idx: int, total_batches: int) -> bool:
    """Whether Lightning validates after training batch ``batch_idx``, by its own rule on public
    trainer attributes. (A time-based val_check_interval cannot be foreseen: False.)"""
    epochs = trainer.check_val_every_n_epoch
    if not trainer.enable_validation or (epochs and (trainer.current_epoch + 1) % epochs):
        return False
    if batch_idx + 1 >= trainer.num_training_batches:  # the epoch's last batch
        return True
    every = trainer.val_check_batch  # val_check_interval in batches
    if not isinstance(every, int):
        return False
    # check_val_every_n_epoch=null: val_check_interval counts batches across epochs.
    if epochs is None:
        batch_idx = total_batches - 1
    return (batch_idx + 1) % every == 0


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()

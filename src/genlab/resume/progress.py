"""Count the training batches of the current epoch, and keep an interrupted validation to repeat.

The resumable loaders (``genlab.data.loader``, ``genlab.data.device_batches``) run a batch
ahead of training, so they cannot know on their own how many batches a checkpoint has seen.
This callback tells them after every finished batch (``mark_trained``); their ``state_dict``
then records the exact position, and a resumed run skips exactly those batches.

A checkpoint written while an epoch's validation runs (SIGTERM, Ctrl-C) records that
validation as begun, not finished: Lightning (2.6) otherwise resumes past it, and the
epoch loses its validation row, its best-on-monitor checkpoint and the sweep score. The
record is Lightning's own "stopped inside a validation step" state, with no batch done yet:
on resume Lightning runs that validation again from its first batch (validation draws from
seeds of its own, so it is the one the run would have had). Public hooks only: the state is
written into the ``loops`` entry of the checkpoint that ``on_save_checkpoint`` receives.
"""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from genlab.checkpoints.keys import VALIDATION_PENDING_KEY

log = logging.getLogger(__name__)

# ``mark_trained`` value for "the epoch is complete" (limit_train_batches may end it early).
EPOCH_DONE = 2**62

# The fit loop's validation counters in Lightning's checkpoint format (``checkpoint["loops"]``).
_VAL_PROGRESS = "epoch_loop.val_loop.batch_progress"


class BatchProgress(Callback):
    def __init__(self) -> None:
        self.batches = 0  # finished training batches of the current epoch
        self.total = 0  # finished training batches of the run (checkpointed)
        # Set by CheckpointOnInterrupt while it writes the checkpoint of a stop in validation.
        self.stopping_in_validation = False
        # Resumed into a repeated validation: until the epoch ends, Lightning's per-epoch
        # validation counters carry the begun-but-unprocessed step it resumed from.
        self._repeating = False

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.batches = 0
        self._repeating = False  # Lightning resets the per-epoch validation counters here

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:  # fmt: skip
        # batch_idx continues from the checkpoint in a resumed epoch, so +1 is the count.
        self.batches = batch_idx + 1
        self.total += 1
        done = self.batches >= trainer.num_training_batches  # limit_train_batches included
        mark = getattr(trainer.train_dataloader, "mark_trained", None)
        if mark is not None:  # a plain DataLoader (DDP) resumes from epoch ends only
            mark(EPOCH_DONE if done else self.batches)

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.total = int(state_dict.get("total", 0))

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        progress = validation_counters(checkpoint)
        if self.stopping_in_validation:
            if progress is None or not validation_not_begun(progress):
                log.warning(
                    "this Lightning version stores no validation counters where genlab "
                    "expects them: a run resumed from this checkpoint may skip epoch %d's "
                    "validation",
                    trainer.current_epoch,
                )
                return
            checkpoint[VALIDATION_PENDING_KEY] = True
        elif self._repeating and progress is not None:
            drop_begun_step(progress)

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._repeating = bool(checkpoint.get(VALIDATION_PENDING_KEY))


def validation_counters(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """The fit's validation counters in the checkpoint's ``loops`` entry: the one loop state
    that holds them (Lightning's checkpoint format), or None."""
    for state in (checkpoint.get("loops") or {}).values():
        if isinstance(state, dict) and isinstance(state.get(_VAL_PROGRESS), dict):
            return state[_VAL_PROGRESS]
    return None


def validation_not_begun(progress: dict[str, Any]) -> bool:
    """Rewrite the validation counters of a checkpoint written mid-validation to "the first
    step of this validation begun, none processed": Lightning's restart state that makes it
    run the validation (all of it, since no batch counts as done) before training on.
    False if ``progress`` is not in the format this expects."""
    try:
        total, current = progress["total"], progress["current"]
        # ``total`` counts this epoch's validation batches (several runs with
        # val_check_interval < 1); ``current`` this run's. Earlier runs are whole.
        before = int(total["completed"]) - int(current["completed"])
    except (KeyError, TypeError, ValueError):
        return False
    begun = {"ready": 1, "started": 1, "processed": 0, "completed": 0}
    progress["current"] = begun
    progress["total"] = {k: before + n for k, n in begun.items()}
    progress["is_last_batch"] = False
    return True


def drop_begun_step(progress: dict[str, Any]) -> None:
    """Lightning keeps the begun step of ``validation_not_begun`` in the epoch's validation
    counters after it repeated the validation: without this, a later checkpoint of the same
    epoch would read as stopped mid-validation, and its resume would validate once more."""
    total = progress.get("total", {})
    if total.get("started") == total.get("ready") == total.get("processed", 0) + 1:
        total["ready"] = total["started"] = total["processed"]

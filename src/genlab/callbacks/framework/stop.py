"""A stop request ends the epoch before the next batch runs, even before ``min_epochs``.

Callbacks ask training to stop by setting ``trainer.should_stop`` (the privacy budget when the
next private step would overspend it, the last time mark of ``CheckpointAtMinutes``). Alone,
that flag lets the batch in hand run and, while ``trainer.min_epochs`` is not met, is ignored.
Lightning has one public way to end an epoch before a batch: the LightningModule's
``on_train_batch_start`` returning -1; a callback's return value is ignored. So this callback
wraps the model's own ``on_train_batch_start`` (whatever class defines it, overridden with or
without ``super()``) for the length of ``fit``: the model's hook runs as written, after every
callback's, and -1 is returned when a stop was requested.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

_HOOK = "on_train_batch_start"


def _stopping_first(
    pl_module: pl.LightningModule, own: Callable[[Any, int], int | None]
) -> Callable[[Any, int], int | None]:
    def on_train_batch_start(batch: Any, batch_idx: int) -> int | None:
        response = own(batch, batch_idx)
        return -1 if pl_module.trainer.should_stop else response

    on_train_batch_start.wraps = own  # type: ignore[attr-defined]
    return on_train_batch_start


class StopBeforeBatch(Callback):
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        hook = getattr(pl_module, _HOOK)
        if stage == "fit" and not hasattr(hook, "wraps"):
            # An instance attribute shadows the class's method, for this model only.
            setattr(pl_module, _HOOK, _stopping_first(pl_module, hook))

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        hook = vars(pl_module).get(_HOOK)
        if stage == "fit" and hasattr(hook, "wraps"):
            del pl_module.__dict__[_HOOK]  # the class's hook again
            if hook.wraps != getattr(pl_module, _HOOK):  # the model had set one of its own
                setattr(pl_module, _HOOK, hook.wraps)

"""Checkpoints at fixed minutes of a run's wall-clock time: quality per unit of compute.

    python train.py +callbacks.time_marks._target_=genlab.callbacks.time_marks.CheckpointAtMinutes \
        +callbacks.time_marks.dirpath=... '+callbacks.time_marks.minutes=[1,2,4,6]'

(``benchmarks/time_to_quality.py`` sets it up.) When the time since fit started first passes a
mark, after the batch in flight, ``minute_<m>.ckpt`` is written; after the last mark training
stops (``stop_at_last``). A run whose epochs end before its last mark writes one more checkpoint
at the minute it ended, so a recipe shorter than the budget is scored where it finished. Time
counts everything a user waits for: training, validation and the FID monitor. A resumed run
carries on from the time already spent.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from genlab.errors import ConfigError


def mark_name(minute: float) -> str:
    return f"minute_{minute:07.2f}.ckpt"


class CheckpointAtMinutes(Callback):
    def __init__(
        self, dirpath: str | Path, minutes: list[float], stop_at_last: bool = True
    ) -> None:
        marks = sorted(float(m) for m in minutes)
        if not marks or marks[0] <= 0:
            raise ConfigError(f"callbacks.time_marks.minutes={minutes}: give positive minutes.")
        self.dirpath, self.marks, self.stop_at_last = Path(dirpath), marks, stop_at_last
        self.spent = 0.0  # seconds before this process (a resumed run)
        self.passed = 0  # marks already written
        self._start: float | None = None

    def elapsed(self) -> float:
        """Seconds of this run so far, lives before a resume included."""
        return self.spent + (time.perf_counter() - self._start if self._start else 0.0)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:  # fmt: skip
        while self.passed < len(self.marks) and self.elapsed() >= 60 * self.marks[self.passed]:
            minute = self.marks[self.passed]
            self.passed += 1  # before the save: the mark's checkpoint knows it is written
            trainer.save_checkpoint(self.dirpath / mark_name(minute), weights_only=False)
        if self.stop_at_last and self.passed == len(self.marks):
            trainer.should_stop = True  # StopBeforeBatch ends the epoch before the next batch

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.passed < len(self.marks):  # the recipe's epochs ran out before the budget
            minute = self.elapsed() / 60
            self.passed = len(self.marks)
            trainer.save_checkpoint(self.dirpath / mark_name(minute), weights_only=False)

    def state_dict(self) -> dict[str, Any]:
        return {"spent": self.elapsed(), "passed": self.passed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.spent, self.passed = state["spent"], state["passed"]

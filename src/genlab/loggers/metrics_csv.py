"""``metrics.csv`` in the run directory, continued (not replaced) by a resumed run.

Built on Lightning's public ``Logger`` interface only: one row per logged step (``step`` plus
the metrics logged then), columns sorted, the header rewritten when a new metric appears.

After a crash between checkpoints, the resumed run redoes the batches trained since the
checkpoint; the rows the crashed run logged for them are dropped, so the file reads as if the
run had never stopped. ``MetricsCheckpointSync`` makes this exact: every checkpoint records its
step (the training batches it has seen) and first writes the pending rows out. It also carries
the run's latest metrics (``trainer.callback_metrics``) over a resume, so ``result.json`` lists
the same ones whether or not the run stopped.

A ``metrics.csv`` deleted while the run writes it is rewritten whole (header and every row so
far, which the logger keeps) with one warning, not continued headerless.
"""

from __future__ import annotations

import csv
import logging
from argparse import Namespace
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.core.saving import save_hparams_to_yaml
from pytorch_lightning.loggers.logger import Logger
from pytorch_lightning.utilities import rank_zero_only

from genlab.checkpoints.keys import METRICS_KEY, STEP_KEY
from genlab.utils.atomic import atomic_path

log = logging.getLogger(__name__)


class ResumableCSVLogger(Logger):
    """Writes ``<save_dir>/<name>/<version>/metrics.csv`` and ``hparams.yaml``.

    ``append`` (set by ``adapters.CSVAdapter`` when the run resumes from a checkpoint) keeps
    the rows of the run it continues, so ``python train.py resume=<run dir>`` leaves one file
    with the whole run. A fresh run in a used directory starts a new file.

    On resume the rows of the batches the resumed run trains again are dropped at its first
    write: those whose step is at or after the checkpoint's (``continue_from_step``, called by
    ``MetricsCheckpointSync``) or, when the checkpoint does not say, at or after the first
    step this run logs. A row of the checkpoint's last step (an epoch's validation row, logged
    after its last batch) is kept."""

    METRICS_FILE = "metrics.csv"

    def __init__(
        self,
        save_dir: str | Path,
        name: str = "",
        version: int | str = "",
        flush_logs_every_n_steps: int = 100,
        append: bool = False,
    ) -> None:
        super().__init__()
        self._save_dir, self._name, self._version = str(save_dir), name, version
        self.flush_logs_every_n_steps = flush_logs_every_n_steps
        self.append = append
        self._rows: list[dict[str, Any]] = []  # logged, not yet in the file
        # The rows in the file, kept to rewrite it whole: a new metric changes the header, and
        # a file deleted mid-run comes back complete.
        self._written: list[dict[str, Any]] = []
        self._keys: list[str] | None = None  # the header on disk; None before the first write
        self._resume_step: int | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> int | str:
        return self._version

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    def log_dir(self) -> str:
        return str(Path(self._save_dir, self._name, str(self._version)))

    @property
    def metrics_path(self) -> Path:
        return Path(self.log_dir) / self.METRICS_FILE

    def continue_from_step(self, step: int | None) -> None:
        """This run resumes at ``step`` (the checkpoint's): the rows at or after it, logged for
        batches this run trains again, are dropped at the first write. None: the checkpoint
        does not say (then the first step this run logs decides). Call it before any row is
        written."""
        self._resume_step = step

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace) -> None:
        params = vars(params) if isinstance(params, Namespace) else params
        Path(self.log_dir).mkdir(parents=True, exist_ok=True)
        save_hparams_to_yaml(Path(self.log_dir) / "hparams.yaml", params)

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        row = {k: v.item() if hasattr(v, "item") else v for k, v in metrics.items()}
        row["step"] = len(self._rows) if step is None else step
        self._rows.append(row)
        if (row["step"] + 1) % self.flush_logs_every_n_steps == 0:
            self.save()

    @rank_zero_only
    def save(self) -> None:
        if not self._rows:
            return
        if self._keys is None:  # first write of this process: continue or replace the file
            self._start_file()
        elif self._keys and not self.metrics_path.is_file():
            log.warning(
                "%s was deleted during the run: rewrote it with its header and the %d rows "
                "logged so far",
                self.metrics_path,
                len(self._written),
            )
            self._rewrite(self._keys, self._written)
        keys = sorted(set(self._keys or []).union(*self._rows))
        if keys != self._keys:  # a new metric: the header (and so the file) is rewritten
            self._rewrite(keys, self._written)
        with open(self.metrics_path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self._keys).writerows(self._rows)
        self._written += self._rows
        self._rows = []

    @rank_zero_only
    def flush(self) -> None:
        """Write the pending rows out, and trim a continued file even before the first row."""
        if self._keys is None and self.append and self._resume_step is not None:
            self._start_file()
        self.save()

    def _start_file(self) -> None:
        keys: list[str] = []
        rows: list[dict[str, Any]] = []
        if self.append and self.metrics_path.is_file():
            keys, rows = self._read()
            rows = [{k: v for k, v in r.items() if v != ""} for r in self._rows_kept(rows)]
        keys = sorted(set(keys).union(*self._rows))
        if keys:
            self._rewrite(keys, rows)
        else:  # nothing logged yet, nothing kept: no file until the first row
            self.metrics_path.unlink(missing_ok=True)
            self._keys = []

    def _read(self) -> tuple[list[str], list[dict[str, Any]]]:
        with open(self.metrics_path, newline="") as f:
            reader = csv.DictReader(f)
            return list(reader.fieldnames or []), list(reader)

    def _rows_kept(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows of the run this one continues, without those of the batches it redoes."""
        # The batch at a run's first logged step is one it trains: at the checkpoint's step or,
        # with rows logged every few steps, a little after it.
        first = self._resume_step if self._resume_step is not None else self._first_step()
        if first is None:  # nothing to go by (an old checkpoint, nothing logged yet)
            return rows
        kept = [r for r in rows if _step(r) is None or _step(r) < first]
        if len(kept) < len(rows):
            log.info(
                "%s: dropped %d rows logged after the checkpoint (their batches are redone)",
                self.metrics_path,
                len(rows) - len(kept),
            )
        return kept

    def _first_step(self) -> int | None:
        return int(self._rows[0]["step"]) if self._rows else None

    def _rewrite(self, keys: list[str], rows: list[dict[str, Any]]) -> None:
        with atomic_path(self.metrics_path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        self._keys, self._written = keys, list(rows)

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:
        # The rows of the batches a checkpoint has seen go to disk with it: a kill -9 later
        # cannot lose them (the resumed run will not log them again).
        self.save()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        try:
            self.save()
        except OSError as err:
            if status != "failed":
                raise
            # Lightning finalizes while the run's own error (say, the full disk that failed
            # a checkpoint) propagates: that error is the one to report.
            log.warning("could not write %s: %s", self.metrics_path, err)


def _step(row: dict[str, Any]) -> int | None:
    try:
        return int(row.get("step") or "")
    except ValueError:
        return None


class MetricsCheckpointSync(Callback):
    """Keeps ``metrics.csv`` in step with the checkpoints.

    Every checkpoint records its step, the training batches it has seen (counted here through
    public hooks; the logged ``step`` axis counts batches too, see docs/models.md), and writes
    the loggers' pending rows out first. A run resumed from it tells its
    ``ResumableCSVLogger``s that step, so they drop exactly the rows of the batches it trains
    again."""

    def __init__(self, loggers: list[Logger]) -> None:
        self.loggers = [lg for lg in loggers if isinstance(lg, ResumableCSVLogger)]
        # None: resumed from a checkpoint that did not record its step; the count is unknown.
        self.batches: int | None = 0
        self._metrics: dict[str, float] = {}  # a checkpoint's, until training starts

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # What the run had logged when the checkpoint was written (the last training losses,
        # the learning rate, a val/fid of an earlier epoch): result.json reports them even if
        # this process logs them no more (resumed into the last epoch's validation). Set after
        # the sanity check, which clears the metrics; what this run logs replaces them.
        device = trainer.strategy.root_device
        for name, value in self._metrics.items():
            trainer.callback_metrics.setdefault(name, torch.tensor(value, device=device))
        self._metrics = {}

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # Every checkpoint is written between batches (or after the batch in flight), so the
        # batches started are the batches it has seen.
        if self.batches is not None:
            self.batches += 1

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        for logger in self.loggers:
            logger.flush()  # the rows of the batches it has seen, on disk with it
        if self.batches is not None and _step_is_batch(trainer):
            checkpoint[STEP_KEY] = self.batches
        checkpoint[METRICS_KEY] = {
            name: float(value)
            for name, value in trainer.callback_metrics.items()
            if getattr(value, "numel", lambda: 1)() == 1
        }

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self.batches = checkpoint.get(STEP_KEY)
        self._metrics = checkpoint.get(METRICS_KEY) or {}
        for logger in self.loggers:
            logger.continue_from_step(self.batches if _step_is_batch(trainer) else None)


def _step_is_batch(trainer: pl.Trainer) -> bool:
    # Accumulating gradients, Lightning advances the logged step once per optimizer step.
    return trainer.accumulate_grad_batches == 1

"""Loggers that genlab configures beyond Lightning's own."""

from __future__ import annotations

import csv

from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        # Lightning deletes an existing metrics.csv here. A resumed run writes into its own
        # run directory: keep the rows it logged before it stopped, and their columns.
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = next(csv.reader(f), [])


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` that appends to the run directory's ``metrics.csv`` instead of replacing
    it, so ``python train.py resume=<run dir>`` leaves one file with the whole run."""

    @property
    @rank_zero_experiment  # DDP: ranks > 0 get a no-op writer, as with CSVLogger
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment

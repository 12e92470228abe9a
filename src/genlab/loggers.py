"""Loggers that genlab configures beyond Lightning's own."""

from __future__ import annotations

import csv

from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment


class _AppendingWriter(ExperimentWriter):
    """Keeps an existing metrics.csv (rows and columns) instead of deleting it."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = next(csv.reader(f), [])


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` that, when ``append`` is set (``train.py`` sets it when resuming from a
    checkpoint), appends to the run directory's ``metrics.csv`` instead of replacing it, so
    ``python train.py resume=<run dir>`` leaves one file with the whole run. A fresh run in a
    used directory still starts a new file, as with Lightning's logger."""

    append = False

    @property
    @rank_zero_experiment  # DDP: ranks > 0 get a no-op writer, as with CSVLogger
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            writer = _AppendingWriter if self.append else ExperimentWriter
            self._experiment = writer(log_dir=self.log_dir)
        return self._experiment

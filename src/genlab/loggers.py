"""``metrics.csv`` in the run directory, continued (not replaced) by a resumed run.

Built on Lightning's public ``Logger`` interface only: one row per logged step (``step`` plus
the metrics logged then), columns sorted, the header rewritten when a new metric appears.
"""

from __future__ import annotations

import csv
from argparse import Namespace
from pathlib import Path
from typing import Any

from pytorch_lightning.core.saving import save_hparams_to_yaml
from pytorch_lightning.loggers.logger import Logger
from pytorch_lightning.utilities import rank_zero_only

from genlab.utils.atomic import atomic_path


class ResumableCSVLogger(Logger):
    """Writes ``<save_dir>/<name>/<version>/metrics.csv`` and ``hparams.yaml``.

    ``append`` (set by ``train.py`` when it resumes from a checkpoint) keeps the rows of the
    run it continues, so ``python train.py resume=<run dir>`` leaves one file with the whole
    run. A fresh run in a used directory starts a new file."""

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
        self._rows: list[dict[str, Any]] = []
        self._keys: list[str] | None = None  # the header on disk; None before the first write

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
        path = self.metrics_path
        if self._keys is None:  # first write of this process: continue or replace the file
            self._keys, old_rows = [], []
            if self.append and path.is_file():
                with open(path, newline="") as f:
                    reader = csv.DictReader(f)
                    self._keys, old_rows = list(reader.fieldnames or []), list(reader)
            self._rewrite(self._keys, old_rows)
        keys = sorted(set(self._keys).union(*self._rows))
        if keys != self._keys:  # a new metric: the header (and so the file) is rewritten
            with open(path, newline="") as f:
                old_rows = list(csv.DictReader(f))
            self._rewrite(keys, old_rows)
        with open(path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self._keys).writerows(self._rows)
        self._rows = []

    def _rewrite(self, keys: list[str], rows: list[dict[str, Any]]) -> None:
        with atomic_path(self.metrics_path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        self._keys = keys

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.save()

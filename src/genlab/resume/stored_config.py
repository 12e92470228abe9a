"""Store the run's resolved config in every checkpoint it writes."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

from genlab.checkpoints.keys import CONFIG_FILE_KEY, CONFIG_KEY


class StoreConfigInCheckpoint(pl.Callback):
    """Makes checkpoints self-describing: ``sample.py ckpt_path=...`` needs nothing else. (The
    loggers' run ids, which ``train.py ckpt_path=...`` continues, are stored by
    ``genlab.loggers.run.ResumeIdsInCheckpoint``.)"""

    def __init__(self, config: dict, config_file_sha256: str | None = None) -> None:
        self.config = config
        self.config_file_sha256 = config_file_sha256

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[CONFIG_KEY] = self.config
        if self.config_file_sha256:
            checkpoint[CONFIG_FILE_KEY] = self.config_file_sha256

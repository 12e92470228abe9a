"""Store the run's resolved config in every checkpoint it writes."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

CONFIG_KEY = "genlab_config"  # where checkpoints keep the run's resolved config


class StoreConfigInCheckpoint(pl.Callback):
    """Makes checkpoints self-describing: ``sample.py ckpt_path=...`` needs nothing else."""

    def __init__(self, config: dict) -> None:
        self.config = config

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[CONFIG_KEY] = self.config

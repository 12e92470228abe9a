"""Store the run's resolved config in every checkpoint it writes."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.loggers import WandbLogger

CONFIG_KEY = "genlab_config"  # where checkpoints keep the run's resolved config
WANDB_ID_KEY = "wandb_run_id"  # and the W&B run they belong to, so a resume continues it


class StoreConfigInCheckpoint(pl.Callback):
    """Makes checkpoints self-describing: ``sample.py ckpt_path=...`` needs nothing else, and
    ``train.py ckpt_path=...`` continues the same W&B run."""

    def __init__(self, config: dict) -> None:
        self.config = config

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[CONFIG_KEY] = self.config
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                checkpoint[WANDB_ID_KEY] = logger.version

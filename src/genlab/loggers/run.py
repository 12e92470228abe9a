"""The run's loggers: built from the config and the checkpoint being resumed, the callbacks they
add to the run, and finished when the task ends.

    loggers = build_loggers(cfg, checkpoint)
    callbacks = with_logger_callbacks(callbacks, loggers)
    with finishing(loggers):
        trainer.fit(...)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback, LearningRateMonitor
from pytorch_lightning.loggers import Logger

from genlab.loggers.adapters import adapter, adapter_for_config
from genlab.loggers.metrics_csv import MetricsCheckpointSync


def build_loggers(cfg: DictConfig, checkpoint: dict | None) -> list[Logger]:
    """The ``logger`` group's loggers, adapted to this run by their adapters (offline W&B
    without network, the W&B run of the checkpoint being resumed, metrics.csv continued on
    resume). Entries set to null are skipped (``logger.tensorboard=null``)."""
    group = cfg.get("logger") or {}
    loggers = []
    for config in group.values():
        if not config or "_target_" not in config:
            continue
        kwargs = adapter_for_config(config).build_kwargs(config, checkpoint, cfg.get("ckpt_path"))
        loggers.append(instantiate(config, **kwargs))
    return loggers


def with_logger_callbacks(callbacks: list[Callback], loggers: list[Logger]) -> list[Callback]:
    """``callbacks`` plus what the loggers add to a run: their resume ids in every checkpoint
    and metrics.csv rows in step with the checkpoints. Without a logger (``logger=none``)
    LearningRateMonitor is left out: it refuses to run without one."""
    if not loggers:
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    return [*callbacks, ResumeIdsInCheckpoint(), MetricsCheckpointSync(loggers)]


class ResumeIdsInCheckpoint(Callback):
    """Every checkpoint names the loggers' own runs (the W&B run id), so ``train.py
    ckpt_path=...`` continues them."""

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        for logger in trainer.loggers:
            adapter(logger).save_resume_id(checkpoint)


@contextmanager
def finishing(loggers: list[Logger]) -> Iterator[None]:
    """Finish the loggers' runs when the block ends: as failed when it raises (a diverged run,
    SIGTERM, Ctrl-C)."""
    failed = True
    try:
        yield
        failed = False
    finally:
        for logger in loggers:
            adapter(logger).finish(failed)

"""``genlab.train.run``: compose -> instantiate -> fit -> test on the best checkpoint.

python train.py                                   # DCGAN on MNIST, CSV logs
python train.py model=vae trainer=gpu logger=wandb
python train.py -m model.optimizer.lr=1e-4,2e-4   # one run directory per job
"""

from __future__ import annotations

import logging

import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.loggers import WandbLogger

from genlab.callbacks.config import StoreConfigInCheckpoint
from genlab.utils.config import (
    apply_extras,
    instantiate_group,
    instantiate_list,
    to_dict,
    validate,
)

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> float | None:
    """Train ``cfg.model`` on ``cfg.data``; return the best value of ``model.monitor``.

    The return value is what Hydra sweepers (Optuna) minimise or maximise.
    """
    validate(cfg)  # before any data is touched: config mistakes cost seconds
    apply_extras(cfg)
    pl.seed_everything(cfg.seed, workers=True)

    datamodule: pl.LightningDataModule = instantiate_group(cfg, "data")
    model = instantiate_group(cfg, "model")
    resolved = to_dict(cfg)
    callbacks = [*instantiate_list(cfg.get("callbacks")), StoreConfigInCheckpoint(resolved)]
    loggers = instantiate_list(cfg.get("logger"))
    if not loggers:  # LearningRateMonitor refuses to run without a logger (logger=none)
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    for logger in loggers:
        logger.log_hyperparams(resolved)
    trainer: pl.Trainer = instantiate_group(
        cfg, "trainer", callbacks=callbacks, logger=loggers or False
    )

    failed = True
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        score = _best_score(trainer, model.monitor)
        if cfg.get("test"):
            best = (
                trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            )
            if not best:
                log.warning(
                    "No best checkpoint (fast_dev_run or no monitor): testing current weights."
                )
            trainer.test(model, datamodule=datamodule, ckpt_path=best or None)
        log.info("best %s = %s; run dir: %s", model.monitor, score, cfg.paths.output_dir)
        failed = False
    finally:
        # W&B keeps one run per process: close it so the next multirun job gets its own, and
        # mark a crashed (e.g. diverged) run as failed rather than finished.
        for logger in loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.finish(exit_code=int(failed))
    return score


def _best_score(trainer: pl.Trainer, monitor: str) -> float | None:
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.best_model_score is not None:
        return float(checkpoint.best_model_score)
    value = trainer.callback_metrics.get(monitor)
    return None if value is None else float(value)

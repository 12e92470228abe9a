"""``genlab.train.run``: compose -> instantiate -> fit -> test on the best checkpoint.

python train.py                                   # DCGAN on MNIST, CSV logs
python train.py model=vae trainer=gpu logger=wandb
python train.py -m model.optimizer.lr=1e-4,2e-4   # one run directory per job
python train.py resume=outputs/train/runs/<time>   # continue a stopped run exactly
"""

from __future__ import annotations

import logging
import signal
import time

import pytorch_lightning as pl
from omegaconf import DictConfig, open_dict
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from genlab.callbacks.config import WANDB_ID_KEY, StoreConfigInCheckpoint
from genlab.loggers import ResumableCSVLogger
from genlab.sweeps import write_result
from genlab.utils.atomic import AtomicCheckpointIO
from genlab.utils.checkpoint import read_checkpoint
from genlab.utils.config import (
    adapt_strategy_to_launcher,
    apply_extras,
    fall_back_to_offline_wandb,
    instantiate_group,
    instantiate_list,
    to_dict,
    validate,
)
from genlab.utils.resume import resume_config
from genlab.utils.run_dir import write_run_info

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> float | None:
    """Train ``cfg.model`` on ``cfg.data``; return the best value of ``model.monitor``.

    The return value is what Hydra sweepers (Optuna) minimise or maximise. Whatever happens,
    the run directory gets a ``result.json`` (status, best score and checkpoint, final metrics,
    or the error) that ``python -m genlab.sweeps summarize`` reads back.
    """
    if cfg.get("resume"):
        cfg = resume_config(cfg, _command_line_overrides())
    model_cfg = cfg.get("model") or {}
    result = {
        "status": "failed",
        "monitor": model_cfg.get("monitor"),
        "monitor_mode": model_cfg.get("monitor_mode"),
    }
    start = time.perf_counter()
    try:
        score = _fit_and_test(cfg, result)
        result["status"] = "ok"
        return score
    except SIGTERMException as err:  # stopped by a signal after writing last.ckpt
        result["status"] = "interrupted"
        result["error"] = "SIGTERM: resume with python train.py resume=<this run's directory>"
        # 128 + SIGTERM, as if the signal had ended the process: schedulers (SLURM) and shells
        # then see a stop, not a success. (Lightning's own exception would exit with 0.)
        raise SystemExit(128 + signal.SIGTERM) from err
    except BaseException as err:  # KeyboardInterrupt too: the summary shows why a job stopped
        result["error"] = f"{type(err).__name__}: {err}"
        raise
    finally:
        result["seconds"] = round(time.perf_counter() - start, 1)
        try:
            if rank_zero_only.rank == 0:  # DDP ranks share the run directory: one writer
                write_result(cfg.paths.output_dir, result)
        except Exception as err:  # never hide the run's own outcome behind this one
            log.warning("could not write result.json: %s", err)


def _fit_and_test(cfg: DictConfig, result: dict) -> float | None:
    validate(cfg)  # before any data is touched: config mistakes cost seconds
    apply_extras(cfg)
    fall_back_to_offline_wandb(cfg.get("logger"))
    adapt_strategy_to_launcher(cfg)
    resume_wandb_run(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    if rank_zero_only.rank == 0:
        write_run_info(cfg.paths.output_dir, cfg.paths.root_dir)

    datamodule: pl.LightningDataModule = instantiate_group(cfg, "data")
    model = instantiate_group(cfg, "model")
    resolved = to_dict(cfg)
    callbacks = [*instantiate_list(cfg.get("callbacks")), StoreConfigInCheckpoint(resolved)]
    loggers = instantiate_list(cfg.get("logger"))
    for logger in loggers:  # a resumed run continues its metrics.csv
        if isinstance(logger, ResumableCSVLogger):
            logger.append = bool(cfg.get("ckpt_path"))
    if not loggers:  # LearningRateMonitor refuses to run without a logger (logger=none)
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    for logger in loggers:
        logger.log_hyperparams(resolved)
    trainer: pl.Trainer = instantiate_group(
        cfg,
        "trainer",
        callbacks=callbacks,
        logger=loggers or False,
        # Checkpoints written to a temporary name, then renamed: a kill mid-write never
        # leaves a truncated last.ckpt. (A user's own trainer.plugins replace this.)
        **({} if cfg.trainer.get("plugins") else {"plugins": [AtomicCheckpointIO()]}),
    )

    failed = True
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        score = _best_score(trainer, model.monitor)
        checkpoint = trainer.checkpoint_callback
        best = checkpoint.best_model_path if checkpoint else ""
        result.update(best_score=score, best_model_path=best)
        result["metrics"] = _scalars(trainer.callback_metrics)
        if cfg.get("test"):
            if not best:
                log.warning(
                    "No best checkpoint (fast_dev_run or no monitor): testing current weights."
                )
            trainer.test(model, datamodule=datamodule, ckpt_path=best or None)
            result["metrics"].update(_scalars(trainer.callback_metrics))
        log.info("best %s = %s; run dir: %s", model.monitor, score, cfg.paths.output_dir)
        failed = False
    finally:
        # W&B keeps one run per process: close it so the next multirun job gets its own, and
        # mark a crashed (e.g. diverged) run as failed rather than finished.
        for logger in loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.finish(exit_code=int(failed))
    return score


def _command_line_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def resume_wandb_run(cfg: DictConfig) -> None:
    """Resuming from a checkpoint continues its W&B run: the checkpoint holds the run id."""
    wandb_cfg = (cfg.get("logger") or {}).get("wandb")
    if not cfg.get("ckpt_path") or not wandb_cfg or wandb_cfg.get("id"):
        return
    run_id = read_checkpoint(cfg.ckpt_path).get(WANDB_ID_KEY)
    if run_id:
        with open_dict(cfg):
            wandb_cfg.id = run_id
            wandb_cfg.resume = "allow"  # passed to wandb.init
        log.info("resuming W&B run %s from %s", run_id, cfg.ckpt_path)


def _scalars(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if getattr(v, "numel", lambda: 1)() == 1}


def _best_score(trainer: pl.Trainer, monitor: str) -> float | None:
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.best_model_score is not None:
        return float(checkpoint.best_model_score)
    value = trainer.callback_metrics.get(monitor)
    return None if value is None else float(value)

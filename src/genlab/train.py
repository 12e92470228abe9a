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
import warnings
from contextlib import nullcontext
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from genlab.callbacks.fid import FIDMonitor
from genlab.callbacks.framework import framework_callbacks
from genlab.checkpoints.build import build_model
from genlab.checkpoints.io import AtomicCheckpointIO
from genlab.checkpoints.keys import CONFIG_FILE_KEY
from genlab.checkpoints.load import check_fits, read_checkpoint
from genlab.config.extras import apply_extras
from genlab.config.instantiate import instantiate_group, instantiate_list, target_class, to_dict
from genlab.config.launcher import strategy_for_launcher
from genlab.config.validation import check_manual_optimization, validate
from genlab.errors import ConfigError
from genlab.loggers.run import build_loggers, finishing, with_logger_callbacks
from genlab.models.contract import check_contract
from genlab.resume import resume_callbacks
from genlab.resume.command import resume_config
from genlab.resume.run_dir import check_cache_dir, owned_run_dir, write_run_info
from genlab.resume.slurm import (
    batch_job,
    cluster_plugins,
    requeue_after_stop,
    requeued_checkpoint,
    silence_srun_hint,
    threads_for_allocation,
    warning_signals_logged,
)
from genlab.sweeps import write_result
from genlab.sweeps.trial import TrialPruning, current_trial
from genlab.utils.atomic import atomic_path, clean_stale_temporaries
from genlab.utils.hashing import file_sha256

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> float | None:
    """Train ``cfg.model`` on ``cfg.data``; return the best value of ``model.monitor``.

    The return value is what Hydra sweepers (Optuna) minimise or maximise. Whatever happens,
    the run directory gets a ``result.json`` (status, best score and checkpoint, final metrics,
    or the error) that ``python -m genlab.sweeps summarize`` reads back.
    """
    if cfg.get("resume"):
        cfg = resume_config(cfg, _command_line_overrides())
        _record_resumed_config(cfg)
    elif (last := requeued_checkpoint(cfg.paths.output_dir)) is not None:
        # A requeued SLURM job: its own folder, written by this same command on an earlier
        # start, so the stored config is taken as it is (no overrides, trusted).
        with open_dict(cfg):
            cfg.resume = str(last.parent.parent)
            cfg.trust_checkpoint = True
        cfg = resume_config(cfg, [])
        _record_resumed_config(cfg)
    # One live run per folder: a second one (same hydra.run.dir, a resume of a run still going)
    # is refused before it writes anything. DDP ranks share rank 0's folder.
    owned = owned_run_dir(cfg.paths.output_dir) if rank_zero_only.rank == 0 else nullcontext()
    # The extras' warning filters hold for this run only: a notebook or test calling run()
    # gets its own filters back.
    with owned, warnings.catch_warnings(), warning_signals_logged():
        silence_srun_hint()
        return _run(cfg)


def _run(cfg: DictConfig) -> float | None:
    model_cfg = cfg.get("model") or {}
    result = {
        "status": "failed",
        "monitor": model_cfg.get("monitor"),
        "monitor_mode": model_cfg.get("monitor_mode"),
    }
    start = time.perf_counter()
    try:
        score = _fit_and_test(cfg, result)
        # A search's pruner stopped it early: a clean stop, told to Optuna as PRUNED.
        result["status"] = "pruned" if result.get("pruned_after_validation") is not None else "ok"
        return score
    except SIGTERMException as err:  # stopped by a signal after writing last.ckpt
        # Lightning's handler is gone after its teardown: a second SIGTERM now would kill the
        # process before result.json says "interrupted" (last.ckpt and metrics.csv are safe).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        result["status"] = "interrupted"
        result["error"] = "SIGTERM: resume with python train.py resume=<this run's directory>"
        if rank_zero_only.rank == 0:  # a SLURM batch job continues by itself: requeue it
            requeue = requeue_after_stop(cfg.get("requeue_limit"))
            if requeue is not None:
                result["status"], result["slurm"] = requeue
        # 128 + SIGTERM, as if the signal had ended the process: schedulers (SLURM) and shells
        # then see a stop, not a success. (Lightning's own exception would exit with 0.)
        raise SystemExit(128 + signal.SIGTERM) from err
    except BaseException as err:  # KeyboardInterrupt too: the summary shows why a job stopped
        result["error"] = f"{type(err).__name__}: {err}"
        raise
    finally:
        result["seconds"] = round(time.perf_counter() - start, 1)
        if (job := batch_job()) is not None:
            result["slurm_job_id"] = job.job_id
            result["requeues"] = job.restarts
        try:
            if rank_zero_only.rank == 0:  # DDP ranks share the run directory: one writer
                write_result(cfg.paths.output_dir, result)
        except Exception as err:  # never hide the run's own outcome behind this one
            log.warning("could not write result.json: %s", err)


def _fit_and_test(cfg: DictConfig, result: dict) -> float | None:
    validate(cfg)  # before any data is touched: config mistakes cost seconds
    check_cache_dir(cfg.paths.get("cache_dir"))  # else it fails after the first epoch
    check_monitor_source(cfg)
    apply_extras(cfg)
    threads_for_allocation()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)  # stderr stays for errors
    log.info("seed %s", cfg.seed)
    if rank_zero_only.rank == 0:
        out = Path(cfg.paths.output_dir)  # ours alone (owned_run_dir): leftovers are stale
        clean_stale_temporaries(out, out / "checkpoints", out / "samples")
        write_run_info(out, cfg.paths.root_dir)

    datamodule: pl.LightningDataModule = instantiate_group(cfg, "data")
    # The model, prepared for DP-SGD when privacy.enabled (which refuses what DP-SGD cannot
    # train, before any data is loaded); privacy is the callback that then trains it.
    model, privacy = build_model(cfg)
    check_contract(  # the model contract, on a few seeded samples: ~1 s, no data loaded
        model,
        monitor=cfg.model.get("monitor"),
        channels=cfg.data.get("channels"),
        image_size=cfg.data.get("image_size"),
        callback_metrics=callback_metrics(cfg),
        num_classes=cfg.data.get("num_classes"),
    )
    if not model.automatic_optimization:
        check_manual_optimization(cfg.trainer)
    # Read once, here: the weights must fit this model before any data is loaded, and the
    # checkpoint names the W&B run to continue.
    checkpoint = read_checkpoint(cfg.ckpt_path) if cfg.get("ckpt_path") else None
    # What the user asked for, stored in every checkpoint; the runtime adaptations below
    # (offline W&B, ddp_spawn, the resumed W&B run) act on the objects built, not on this.
    resolved = to_dict(cfg)
    callbacks: list[Callback] = [
        *instantiate_list(cfg.get("callbacks")),
        *resume_callbacks(
            Path(cfg.paths.output_dir) / "checkpoints",
            resolved,
            cfg.get("checkpoint_every_n_batches"),
            _config_file_sha256(cfg, checkpoint),
        ),
        # After the resume callbacks, as the model hooks they replace ran after every callback
        # (the per-rank seed follows the restored RNG states).
        *framework_callbacks(),
    ]
    if privacy is not None:
        callbacks.append(privacy)
    # An Optuna trial (hparams_search=...): the monitor goes to its pruner after each validation.
    trial = current_trial(cfg.paths.output_dir)
    pruning = TrialPruning(trial, model.monitor) if trial and trial.prunable else None
    if pruning is not None:
        callbacks.append(pruning)
    if checkpoint is not None:
        check_fits(model, checkpoint, cfg.ckpt_path)
    loggers = build_loggers(cfg, checkpoint)  # offline W&B, the resumed W&B run, metrics.csv
    callbacks = with_logger_callbacks(callbacks, loggers)
    # The study, trial number and parameters beside the config: W&B groups runs by study.
    logged = {**resolved, "optuna": trial.info()} if trial is not None else resolved
    for logger in loggers:
        logger.log_hyperparams(logged)
    strategy = strategy_for_launcher(cfg)
    # Checkpoints written to a temporary name, then renamed: a kill mid-write never leaves a
    # truncated last.ckpt; under SLURM, requeues are ours alone (genlab.resume.slurm). A
    # user's own trainer.plugins replace these.
    plugins = [AtomicCheckpointIO(), *cluster_plugins()]
    trainer: pl.Trainer = instantiate_group(
        cfg,
        "trainer",
        callbacks=callbacks,
        logger=loggers or False,
        **({} if cfg.trainer.get("plugins") else {"plugins": plugins}),
        **({"strategy": strategy} if strategy else {}),
    )

    with finishing(loggers):  # W&B: one run per job, marked failed if this raises
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        score = _best_score(trainer, model.monitor)
        checkpoint = trainer.checkpoint_callback
        best = checkpoint.best_model_path if checkpoint else ""
        result.update(best_score=score, best_model_path=best)
        result["metrics"] = _scalars(trainer.callback_metrics)
        if pruning is not None and pruning.pruned:
            result["pruned_after_validation"] = pruning.pruned_at
            log.info("pruned: no test; run dir: %s", cfg.paths.output_dir)
            return score
        if cfg.get("test"):
            if not best:
                log.warning(
                    "No best checkpoint (fast_dev_run or no monitor): testing current weights."
                )
            trainer.test(model, datamodule=datamodule, ckpt_path=best or None)
            result["metrics"].update(_scalars(trainer.callback_metrics))
        log.info("best %s = %s; run dir: %s", model.monitor, score, cfg.paths.output_dir)
    return score


def check_monitor_source(cfg: DictConfig) -> None:
    """A sample-quality monitor needs the callback that logs it; without it checkpointing and
    sweeps would wait for a metric that never comes."""
    monitor = cfg.model.get("monitor")
    metric = FIDMonitor.metric_logging(monitor)  # "pr" for val/precision
    if metric is None or monitor in callback_metrics(cfg):
        return
    raise ConfigError(
        f"model.monitor={monitor} is logged by callbacks.fid (with {metric} in "
        "callbacks.fid.metrics), which this config does not have: use callbacks=default, "
        f"add {metric} to callbacks.fid.metrics, or set model.monitor to a metric the model "
        "logs itself (e.g. val/d_loss) with model.monitor_mode."
    )


def callback_metrics(cfg: DictConfig) -> list[str]:
    """The metrics the configured callbacks (and privacy, when enabled) declare they log, which
    model.monitor may name: each class's ``logged_metrics(config)``, given its config node."""
    producers = list((cfg.get("callbacks") or {}).values())
    privacy = cfg.get("privacy")
    if privacy and privacy.get("enabled"):
        producers.append(privacy)
    logged: list[str] = []
    for node in producers:
        declared = getattr(target_class(node), "logged_metrics", None)
        logged += declared(node) if callable(declared) else []
    return logged


def _record_resumed_config(cfg: DictConfig) -> None:
    """Hydra saved the resume command's composed config (the defaults) under
    ``.hydra/resumed_<time>/``; the record must be the config that runs."""
    from hydra.core.hydra_config import HydraConfig

    if rank_zero_only.rank != 0 or not HydraConfig.initialized():
        return
    subdir = HydraConfig.get().output_subdir
    if not subdir:
        return
    path = Path(cfg.paths.output_dir) / subdir / "config.yaml"
    if path.parent.is_dir():
        with atomic_path(path) as tmp:
            tmp.write_text(OmegaConf.to_yaml(cfg))


def _config_file_sha256(cfg: DictConfig, checkpoint: dict | None) -> str | None:
    """The run's ``.hydra/config.yaml`` as it started: from the checkpoint a resumed run
    continues (the file may have been edited since), else from the file Hydra just wrote."""
    out = Path(cfg.paths.output_dir)
    ckpt = cfg.get("ckpt_path")
    if checkpoint is not None and Path(ckpt).resolve().parent.parent == out.resolve():
        return checkpoint.get(CONFIG_FILE_KEY)
    path = out / ".hydra" / "config.yaml"
    return file_sha256(path) if path.is_file() else None


def _command_line_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _scalars(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if getattr(v, "numel", lambda: 1)() == 1}


def _best_score(trainer: pl.Trainer, monitor: str) -> float | None:
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.best_model_score is not None:
        return float(checkpoint.best_model_score)
    value = trainer.callback_metrics.get(monitor)
    return None if value is None else float(value)

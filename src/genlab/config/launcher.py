"""Adapting the trainer to the Hydra launcher that runs it."""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from genlab.errors import ConfigError

log = logging.getLogger(__name__)


def strategy_for_launcher(cfg: DictConfig) -> str | None:
    """Lightning's ``ddp`` starts ranks 1..n-1 by re-running this command line; inside a local
    Hydra multirun (basic or joblib launcher) that re-runs the whole sweep. There ``ddp`` becomes
    ``ddp_spawn`` (ranks forked from the job itself). SLURM via submitit starts one task per
    device itself, which is what plain ``ddp`` expects, so it is left alone there.

    Returns the strategy to build the trainer with, or None to keep ``trainer.strategy``; the
    config itself (saved in checkpoints) is not changed."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    strategy = str(cfg.trainer.get("strategy", "auto"))
    if not strategy.startswith("ddp") or strategy.startswith("ddp_spawn"):
        return None
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    launcher = str(HydraConfig.get().launcher.get("_target_", ""))
    if "submitit" in launcher:
        devices = cfg.trainer.get("devices")
        tasks = HydraConfig.get().launcher.get("tasks_per_node")
        if tasks is not None and devices != tasks:
            raise ConfigError(
                f"trainer.devices={devices} but hydra.launcher.tasks_per_node={tasks}: Lightning's "
                "DDP on SLURM needs one task per device. Set both to the GPUs per node."
            )
        return None
    spawn = strategy.replace("ddp", "ddp_spawn", 1)
    log.warning("trainer.strategy=%s inside a local multirun: using %s", strategy, spawn)
    return spawn

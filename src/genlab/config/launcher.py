"""Adapting the trainer to the Hydra launcher that runs it."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from omegaconf.errors import InterpolationResolutionError

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


# --- SLURM (hydra/launcher=slurm): resources that follow the trainer, checked before submission


def slurm_gpus(accelerator: str, devices: Any) -> int | None:
    """GPUs per node for a SLURM job: ``trainer.devices`` for a GPU trainer, none otherwise (a
    CPU trainer asking for GRES is refused by CPU-only partitions)."""
    if str(accelerator) not in ("gpu", "cuda"):
        return None
    return _device_count(devices, "GPUs")


def slurm_tasks(strategy: str, devices: Any) -> int:
    """Tasks per node: one per DDP rank (Lightning takes the ranks from SLURM), else one."""
    if not str(strategy).startswith("ddp"):
        return 1
    return _device_count(devices, "DDP ranks")


def _device_count(devices: Any, what: str) -> int:
    if isinstance(devices, int) and not isinstance(devices, bool) and devices >= 1:
        return devices
    raise ConfigError(
        f"trainer.devices={devices} under hydra/launcher=slurm: SLURM needs the number of "
        f"{what} per node before the job starts. Set trainer.devices=<number>."
    )


@dataclass(frozen=True)
class Partition:
    name: str
    default: bool
    cpus: int  # the most any node of the partition has
    mem_mb: int
    gpus: int


def slurm_partitions() -> list[Partition]:
    """The cluster's partitions, as ``sinfo`` reports them (one row per node group)."""
    out = subprocess.run(
        ["sinfo", "-h", "-o", "%P|%c|%m|%G"], capture_output=True, text=True, timeout=60
    )
    if out.returncode != 0:
        raise ConfigError(
            f"hydra/launcher=slurm: sinfo cannot reach the cluster ({out.stderr.strip()}). Run "
            "on a machine of the cluster (scripts/slurm_local.sh up starts a one-node one)."
        )
    found: dict[str, Partition] = {}
    for line in out.stdout.splitlines():
        name, cpus, mem, gres = [*line.split("|"), "", "", ""][:4]
        default = name.endswith("*")
        name = name.rstrip("*")
        seen = found.get(name)
        found[name] = Partition(
            name,
            default or (seen.default if seen else False),
            max(_int(cpus), seen.cpus if seen else 0),
            max(_int(mem), seen.mem_mb if seen else 0),
            max(_gpus_in(gres), seen.gpus if seen else 0),
        )
    return list(found.values())


def _int(text: str) -> int:
    match = re.match(r"\d+", text.strip())
    return int(match.group()) if match else 0


def _gpus_in(gres: str) -> int:
    """GPUs per node in a GRES string: ``gpu:4``, ``gpu:a100:4(S:0-1)``, ``(null)``."""
    total = 0
    for item in gres.split(","):
        parts = re.sub(r"\(.*?\)", "", item).split(":")
        if parts[0] == "gpu":
            total += _int(parts[-1]) if len(parts) > 1 else 1
    return total


def slurm_request_problem(launcher: Any, partitions: list[Partition]) -> str | None:
    """Why SLURM would refuse the job, or let it pend forever; None when the partition's nodes
    have what each job asks for."""
    names = ", ".join(p.name for p in partitions) or "none"
    wanted = launcher.get("partition")
    if wanted is None:
        chosen = next((p for p in partitions if p.default), None)
        if chosen is None:
            return (
                f"hydra.launcher.partition is not set and the cluster has no default partition: "
                f"set it to one of {names}."
            )
    else:
        chosen = next((p for p in partitions if p.name == str(wanted)), None)
        if chosen is None:
            return (
                f"hydra.launcher.partition={wanted}: SLURM has no such partition (it has: "
                f"{names}). Set hydra.launcher.partition to one of them."
            )
    tasks = int(launcher.get("tasks_per_node") or 1)
    cpus = int(launcher.get("cpus_per_task") or 1)
    if tasks * cpus > chosen.cpus:
        return (
            f"hydra.launcher.cpus_per_task={cpus} x tasks_per_node={tasks} asks {tasks * cpus} "
            f"CPUs per node; partition {chosen.name}'s nodes have at most {chosen.cpus}. Lower "
            "hydra.launcher.cpus_per_task (or trainer.devices, which sets the tasks)."
        )
    mem_gb = launcher.get("mem_gb")
    if mem_gb and float(mem_gb) * 1024 > chosen.mem_mb:
        return (
            f"hydra.launcher.mem_gb={mem_gb}: partition {chosen.name}'s nodes have at most "
            f"{chosen.mem_mb // 1024} GB for jobs. Lower hydra.launcher.mem_gb."
        )
    gpus = launcher.get("gpus_per_node")
    if gpus and int(gpus) > chosen.gpus:
        have = f"at most {chosen.gpus}" if chosen.gpus else "none"
        return (
            f"hydra.launcher.gpus_per_node={gpus} (from trainer.devices): partition "
            f"{chosen.name}'s nodes have {have}. Use trainer=cpu, fewer trainer.devices, or a "
            "GPU partition (hydra.launcher.partition=...)."
        )
    return None


class CheckLauncher(Callback):
    """A Hydra callback: before a ``hydra/launcher=slurm`` multirun submits anything, its
    resources are checked against the partition (one line, nothing left pending)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        launcher = config.hydra.launcher
        if "SlurmLauncher" not in str(launcher.get("_target_", "")):
            return
        try:
            if shutil.which("sbatch") is None:
                raise ConfigError(
                    "hydra/launcher=slurm needs SLURM's sbatch on this machine: launch from a "
                    "login node of the cluster (scripts/slurm_local.sh up starts a one-node "
                    "test cluster here)."
                )
            problem = slurm_request_problem(launcher, slurm_partitions())
        except ConfigError as err:
            problem = str(err)
        except InterpolationResolutionError as err:  # a resolver's ConfigError, wrapped
            problem = re.sub(r"^ConfigError raised while resolving interpolation: ", "", str(err))
        if problem:
            print(f"genlab: error: {problem}", file=sys.stderr)
            sys.exit(1)

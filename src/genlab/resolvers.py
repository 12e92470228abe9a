"""OmegaConf resolvers used by ``conf/`` (registered when ``genlab`` is imported).

Config glue for the entry points: it may reach any layer (``image_size_of`` asks the image
folder data module), so it sits at the top, beside the entry points.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from genlab.utils.paths import project_root

# Drawn once per process: two runs started in the same second (a shell loop, a job array)
# get distinct run folders, and every read of hydra.run.dir in one process agrees.
_RUN_ID = secrets.token_hex(3)


def run_id() -> str:
    """``${run_id:}``: this process's suffix for run folder names.

    Registered with ``use_cache``: a multirun's jobs are composed from the parent's config by
    Hydra's ``load_sweep_config``, which copies the parent's resolver cache (as it does for
    ``${now:}``), and the cache travels with the config when a launcher pickles it into a
    worker (joblib's loky processes, submitit). So every job resolves ``hydra.sweep.dir`` to
    the parent's folder instead of drawing its worker's own id.

    In a SLURM batch job it is ``job<id>``: a requeued job finds its folder again
    (``genlab.resume.slurm``)."""
    from genlab.resume.slurm import run_folder_suffix

    return run_folder_suffix() or _RUN_ID


def run_dir(resume: str | None, new: str, runs: str) -> str:
    """``${run_dir:${oc.select:resume,null},<new folder>,<runs folder>}``: where this run
    writes. ``resume=<run>`` continues in that run's own folder, so its log and config land
    there and no stray folder is made; a requeued SLURM batch job continues in the folder its
    first start made; anything else gets the new folder."""
    if not resume:
        from genlab.resume.slurm import requeued_run_dir

        requeued = requeued_run_dir(runs)
        return str(requeued) if requeued is not None else new
    from genlab.errors import GenlabError
    from genlab.resume.command import last_checkpoint, latest_run, run_dir_of

    try:  # a resume= that names nothing is reported by train.py, with its fix
        folder = latest_run(Path(runs)) if str(resume) == "latest" else Path(resume)
        return str(run_dir_of(Path(os.path.abspath(last_checkpoint(folder)))))
    except GenlabError:
        return new


def hydra_subdir(resume: str | None) -> str:
    """``${hydra_subdir:${oc.select:resume,null}}``: a resume's composed config goes beside
    the run's own ``.hydra/`` files, not over them; so does a requeued SLURM job's."""
    from genlab.resume.slurm import batch_job

    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    if resume:
        return f".hydra/resumed_{stamp}"
    job = batch_job()
    return f".hydra/requeued_{stamp}" if job is not None and job.restarts else ".hydra"


def image_size_of(path: str) -> int:
    """``${image_size_of:${data.path}}``: the net size that suits an image folder."""
    from genlab.data.image_folder import infer_image_size  # lazy: PIL only when asked

    return infer_image_size(path)


def folder_classes(path: str, file_list: str | None = None) -> list[str]:
    """``${folder_classes:${data.path},${data.file_list}}``: an image folder's classes, its
    class subfolders in sorted order (one class for a flat folder), found without reading an
    image. Cached per config, like ``image_size_of``."""
    from genlab.data.image_folder import folder_classes as scan  # lazy: PIL only when asked

    return scan(path, file_list)


def dataset_classes(dataset: str) -> list[str]:
    """``${dataset_classes:${data.dataset}}``: the published class names of mnist,
    fashion_mnist, kmnist or cifar10 (``[]`` for another name: the data module reports it)."""
    from genlab.data.mnist import DATASET_CLASSES

    return list(DATASET_CLASSES.get(dataset, ()))


def length(items: Sequence[Any]) -> int:
    """``${len:${data.class_names}}``: how many items a list holds (data.num_classes)."""
    return len(items)


def optuna_direction(monitor_mode: str) -> str:
    """``${optuna_direction:${model.monitor_mode}}``: Optuna's name for a monitor's mode."""
    directions = {"min": "minimize", "max": "maximize"}
    if monitor_mode not in directions:
        raise ValueError(f"model.monitor_mode={monitor_mode!r}: choose 'min' or 'max'.")
    return directions[monitor_mode]


def sweep_group() -> str | None:
    """``${sweep_group:}``: one name for every job of a multirun, so W&B shows a sweep's runs
    together: an Optuna search's study name (the same across reruns that continue it), else
    the task and start time; None for a single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    hydra = HydraConfig.get()
    sweeper = hydra.get("sweeper") or {}
    if str(sweeper.get("_target_", "")).endswith(".GenlabOptunaSweeper"):
        return str(sweeper.get("study_name") or "genlab")
    return f"{hydra.job.name}-{Path(hydra.sweep.dir).name}"


def override_tags() -> list[str]:
    """``${override_tags:}``: the job's command-line overrides (``model.optimizer.lr=0.0002``)
    as W&B tags, so runs can be filtered by what was changed. W&B caps a tag at 64 chars."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    overrides = HydraConfig.get().overrides.task
    return [o[:64] for o in overrides if not o.startswith(("hydra.", "hydra/"))]


def slurm_gpus(accelerator: str, devices: Any) -> int | None:
    """``${slurm_gpus:${trainer.accelerator},${trainer.devices}}``: the GPUs a SLURM job asks
    for per node; none for a CPU trainer."""
    from genlab.config.launcher import slurm_gpus as gpus

    return gpus(accelerator, devices)


def slurm_tasks(strategy: str, devices: Any) -> int:
    """``${slurm_tasks:${trainer.strategy},${trainer.devices}}``: one SLURM task per DDP rank."""
    from genlab.config.launcher import slurm_tasks as tasks

    return tasks(strategy, devices)


def _register() -> None:
    # image_size_of and folder_classes scan a folder: cache their answers (per config) instead of
    # rescanning on every access of data.image_size, data.class_names and their interpolations.
    resolvers = {
        "project_root": (project_root, False),
        "mul": (lambda a, b: a * b, False),
        "image_size_of": (image_size_of, True),
        "folder_classes": (folder_classes, True),
        "dataset_classes": (dataset_classes, False),
        "len": (length, False),
        "optuna_direction": (optuna_direction, False),
        "sweep_group": (sweep_group, False),
        "run_id": (run_id, True),  # the parent's id in every multirun job
        "run_dir": (run_dir, False),
        "hydra_subdir": (hydra_subdir, True),
        "override_tags": (override_tags, False),
        "slurm_gpus": (slurm_gpus, False),
        "slurm_tasks": (slurm_tasks, False),
    }
    for name, (fn, cached) in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn, use_cache=cached)


_register()

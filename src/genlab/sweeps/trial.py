"""A job's side of a search trial: find the trial in the study's storage, report the monitor
after each validation, and stop cleanly when the pruner says so.

The sweeper gives every job ``hydra.sweeper.trial=<number>``; the study's storage (SQLite in the
sweep folder, or the configured URL) is reachable from any process or node, so this works the
same in-process, under joblib and under submitit/SLURM. A pruned run keeps its folder,
checkpoints and metrics.csv, skips its test, and records ``status: pruned`` in result.json,
which the sweeper tells Optuna as PRUNED.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

log = logging.getLogger(__name__)
SWEEPER_TARGET = "hydra_plugins.genlab_sweeper.GenlabOptunaSweeper"


@dataclass
class TrialContext:
    """Where a job's trial is: the study, and the trial as a live Optuna object."""

    study_name: str
    number: int
    trial: Any  # optuna.trial.Trial
    params: dict[str, Any]
    prunable: bool  # Optuna prunes single-objective studies only

    def info(self) -> dict[str, Any]:
        """For the run's config in W&B and the other loggers."""
        return {"study": self.study_name, "trial": self.number, "params": self.params}


def current_trial(output_dir: str | None = None) -> TrialContext | None:
    """The trial this Hydra job runs, or None outside a genlab Optuna search."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hydra = HydraConfig.get()
    sweeper = hydra.get("sweeper") or {}
    if sweeper.get("_target_") != SWEEPER_TARGET or sweeper.get("trial") is None:
        return None
    # Optuna comes with the `sweeps` extra: imported only inside a search, so train.py runs
    # (and starts as fast) without it.
    import optuna

    from genlab.sweeps.study import (
        RUN_DIR_ATTR,
        build_pruner,
        open_storage,
        storage_url,
        trial_handle,
    )

    storage = open_storage(storage_url(sweeper.get("storage"), hydra.sweep.dir))
    name = sweeper.get("study_name") or "genlab"
    study = optuna.load_study(
        study_name=name, storage=storage, pruner=build_pruner(sweeper.get("pruner"))
    )
    number = int(sweeper.trial)
    trial = trial_handle(study, storage, number)
    if output_dir is not None:
        trial.set_user_attr(RUN_DIR_ATTR, str(output_dir))  # known even if the sweeper dies
    return TrialContext(name, number, trial, dict(trial.params), len(study.directions) == 1)


class TrialPruning(Callback):
    """After each validation, report ``monitor`` to the trial; stop training when pruned.

    The step is the number of validations so far (1 after the first), so trials whose batches
    cost different numbers of optimizer steps (``n_critic``) are compared at the same point, and
    a pruner's resources count validations: ``min_resource: 1`` decides after the first, and
    Hyperband's ``max_resource`` is the validations of a full trial. The count is part of the
    checkpoint: a trial that resumes goes on counting."""

    def __init__(self, context: TrialContext, monitor: str) -> None:
        self.context, self.monitor = context, monitor
        self.validations = 0
        self.pruned_at: int | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        self.validations += 1
        step = self.validations
        prune = False
        if trainer.is_global_zero:
            self.context.trial.report(float(value), step)
            prune = self.context.trial.should_prune()
        prune = trainer.strategy.broadcast(prune, src=0)  # every rank stops together
        if prune:
            self.pruned_at = step
            trainer.should_stop = True
            log.info(
                "trial %d pruned after validation %d (%s = %.4g): stopping",
                self.context.number, step, self.monitor, float(value),
            )  # fmt: skip

    @property
    def pruned(self) -> bool:
        return self.pruned_at is not None

    def state_dict(self) -> dict[str, Any]:
        return {"validations": self.validations}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.validations = int(state_dict.get("validations", 0))

"""The Optuna search behind ``hparams_search=...``: ask for trials, launch them as Hydra jobs,
tell Optuna what each job recorded.

Hydra reaches it through ``hydra_plugins.genlab_sweeper.GenlabOptunaSweeper``
(``conf/hydra/sweeper/genlab_optuna.yaml``). Each batch of ``n_jobs`` trials goes to the
configured launcher (in-process, joblib, submitit/SLURM). Every job gets
``hydra.sweeper.trial=<number>``, by which it finds its trial in the study's storage to report
validations to the pruner (``genlab.sweeps.trial``). What a trial is told comes from the job's
``result.json``: its objectives, PRUNED, or FAIL with the job's error.
"""

from __future__ import annotations

import inspect
import logging
import random
import sys
from pathlib import Path
from typing import Any

import optuna
import yaml
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from genlab.errors import ConfigError
from genlab.sweeps.checks import no_result_problem
from genlab.sweeps.space import SearchSpace, search_space
from genlab.sweeps.study import (
    DUPLICATE_ATTR,
    OUTCOME_ATTR,
    RUN_DIR_ATTR,
    SWEEPER_ATTR,
    build_pruner,
    counted,
    fail_stale_trials,
    objective_value,
    open_storage,
    open_study,
    params_key,
    read_job_result,
    shown_url,
    storage_url,
    sweeper_identity,
    write_study_record,
)

log = logging.getLogger(__name__)
RESULTS_FILE = "optimization_results.yaml"  # best parameters (or the Pareto set), as before
MAX_DUPLICATE_PROPOSALS = 20  # proposals in a row that repeat a tried point: then stop


class OptunaSearch:
    """The sweeper's state and logic; the plugin class only forwards Hydra's calls here."""

    def __init__(
        self,
        *,
        study_name: str | None = None,
        storage: str | None = None,
        direction: str | list[str] = "minimize",
        directions: list[str] | None = None,
        objectives: list[str] | None = None,
        n_trials: int = 20,
        n_jobs: int = 1,
        max_failure_rate: float = 1.0,
        sampler: DictConfig | None = None,
        pruner: DictConfig | None = None,
        params: DictConfig | None = None,
        trial: int | None = None,  # set for each job by the sweeper, never by a user
        **unknown: Any,
    ) -> None:
        # Checked in setup: an error raised here would reach the user wrapped by Hydra's
        # instantiate, not as the one line that names the key.
        self.unknown = unknown
        self.direction, self.directions = _plain(direction), _plain(directions)
        self.objectives = [str(o) for o in _plain(objectives)] if objectives else None
        self.study_name = study_name or "genlab"
        self.storage = storage
        self.n_trials, self.n_jobs = int(n_trials), int(n_jobs)
        self.max_failure_rate = float(max_failure_rate)
        self.sampler_cfg, self.pruner_cfg = sampler, pruner
        self.params = _plain(params) or {}

    def setup(
        self, *, hydra_context: Any, task_function: Any, config: DictConfig, validate: Any
    ) -> None:
        """``validate``: the plugin's ``validate_batch_is_legal`` (Hydra composes each job's
        config first, so a bad override fails before any job runs)."""
        self.config, self.validate_batch_is_legal = config, validate
        if self.unknown:  # e.g. hydra-optuna-sweeper's custom_search_space, in an old config
            raise ConfigError(
                f"hydra.sweeper.{next(iter(self.unknown))} is not a setting of genlab's Optuna "
                "sweeper: remove it (docs/sweeps.md lists the settings, and what replaced "
                "hydra-optuna-sweeper's)."
            )
        directions = self.directions
        if directions is None:  # `direction` may hold a list too, as the old sweeper allowed
            directions = self.direction if isinstance(self.direction, list) else [self.direction]
        self.directions = [str(d) for d in directions]
        bad = [d for d in self.directions if d not in ("minimize", "maximize")]
        if bad:
            raise ConfigError(
                f"hydra.sweeper.directions: {bad[0]!r} is not minimize or maximize: set "
                "hydra.sweeper.direction=minimize (or maximize), or directions=[...] for "
                "several objectives."
            )
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        monitor = OmegaConf.select(config, "model.monitor")
        self.objectives = self.objectives or ([str(monitor)] if monitor else [])
        if len(self.objectives) != len(self.directions):
            raise ConfigError(
                f"hydra.sweeper.objectives={self.objectives} and directions={self.directions} "
                "must have one entry each per objective, e.g. objectives=[val/fid,minutes] "
                "directions=[minimize,minimize]."
            )
        multi = len(self.directions) > 1
        if multi and self.pruner_cfg and "NopPruner" not in str(self.pruner_cfg.get("_target_")):
            raise ConfigError(
                "hydra/sweeper/pruner: Optuna prunes single-objective studies only; use "
                "hydra/sweeper/pruner=none with several directions."
            )
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # -- trials ---------------------------------------------------------------------------

    def _sampler(self, existing: int) -> optuna.samplers.BaseSampler:
        """The configured sampler. Its seed moves on by the study's trial count, so a study
        that continues draws new points instead of replaying its first ones."""
        if self.sampler_cfg is None:
            return optuna.samplers.TPESampler()
        cfg = dict(_plain(self.sampler_cfg))
        if existing and cfg.get("seed") is not None:
            cfg["seed"] = int(cfg["seed"]) + existing
        # A search config tunes its sampler (n_startup_trials for TPE); chosen with another
        # sampler on the command line, those keys do not apply to it.
        from hydra.utils import get_class

        accepted = inspect.signature(get_class(cfg["_target_"])).parameters
        if not any(p.kind == p.VAR_KEYWORD for p in accepted.values()):
            unknown = [k for k in cfg if not k.startswith("_") and k not in accepted]
            if unknown:
                log.warning("hydra.sweeper.sampler: %s %s not taken by %s: ignored",
                            ", ".join(unknown), "is" if len(unknown) == 1 else "are",
                            cfg["_target_"])  # fmt: skip
                cfg = {k: v for k, v in cfg.items() if k not in unknown}
        return instantiate(cfg)

    def _new_trial(self, study: optuna.Study, space: SearchSpace, job: int) -> Any | None:
        """A trial whose parameters no trial of the study had; None when the space has no
        untried point left. A repeated proposal is recorded as a FAIL marked duplicate_of."""
        tried = {
            params_key(t.params): t.number
            for t in study.get_trials(deepcopy=False)
            if t.params and t.user_attrs.get(DUPLICATE_ATTR) is None
        }
        rng = random.Random(len(tried))
        for _ in range(MAX_DUPLICATE_PROPOSALS):
            trial = study.ask(space.distributions)
            key = params_key(trial.params)
            if key not in tried:
                trial.set_user_attr(SWEEPER_ATTR, sweeper_identity())
                trial.set_user_attr("sweep_dir", str(self.sweep_dir))
                trial.set_user_attr("job", job)
                return trial
            trial.set_user_attr(DUPLICATE_ATTR, tried[key])
            study.tell(trial, state=TrialState.FAIL)
            if space.size() is not None:  # a finite space: offer an untried point next
                untried = [p for p in space.points() if params_key(p) not in tried]
                if not untried:
                    return None
                study.enqueue_trial(rng.choice(untried))
        log.warning(
            "the sampler proposed %d tried points in a row: stopping the search",
            MAX_DUPLICATE_PROPOSALS,
        )
        return None

    def _tell(self, study: optuna.Study, trial: Any, job_return: Any) -> str:
        """Tell Optuna one job's outcome; return the trial's state name."""
        run_dir = OmegaConf.select(job_return.hydra_cfg or {}, "hydra.runtime.output_dir")
        run_dir = run_dir or job_return.working_dir
        trial.set_user_attr(RUN_DIR_ATTR, str(run_dir))
        result = read_job_result(run_dir)
        if job_return.status == JobStatus.FAILED:
            return _fail(study, trial, (result or {}).get("error") or _job_error(job_return))
        if result is None:  # a task that writes no result.json: its return value
            values = job_return.return_value
            values = list(values) if isinstance(values, (list, tuple)) else [values]
            return study.tell(trial, values=[float(v) for v in values]).state.name
        if result.get("status") == "pruned":
            trial.set_user_attr(OUTCOME_ATTR, "pruned")
            study.tell(trial, state=TrialState.PRUNED)
            return "PRUNED"
        values = [objective_value(result, key) for key in self.objectives]
        if result.get("status") != "ok" or any(v is None for v in values):
            missing = [k for k, v in zip(self.objectives, values, strict=True) if v is None]
            return _fail(study, trial, result.get("error") or f"no value for {', '.join(missing)}")
        trial.set_user_attr(OUTCOME_ATTR, "ok")
        study.tell(trial, values=values)
        return "COMPLETE"

    # -- the search -----------------------------------------------------------------------

    def sweep(self, arguments: list[str]) -> None:
        space = search_space(self.params, arguments)
        if not space.distributions:
            raise ConfigError(
                "the search has no parameter to search: set hydra.sweeper.params (e.g. "
                "model.optimizer.lr: tag(log, interval(1e-5, 1e-3))) or pass one on the command "
                "line as key=choice(a,b) / key=interval(lo,hi)."
            )
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        url = storage_url(self.storage, self.sweep_dir)
        storage = open_storage(url)
        study = open_study(
            study_name=self.study_name,
            storage=storage,
            directions=self.directions,
            sampler_factory=self._sampler,
            pruner=build_pruner(self.pruner_cfg),
        )
        failed, live = fail_stale_trials(study, storage)
        if failed:
            log.info("trials %s were left RUNNING by a stopped sweeper: marked FAIL", failed)
        if live:
            log.warning("trials %s are RUNNING under another sweeper of this study: counted "
                        "as in flight", live)  # fmt: skip
        trials = study.get_trials(deepcopy=False)
        done = sum(map(counted, trials)) + len(live)
        remaining = self.n_trials - done
        log.info(
            "study %s (%s): %d of %d trials done, %d to run; %s",
            self.study_name, shown_url(url), done, self.n_trials, max(remaining, 0),
            ", ".join(f"{k}: {d}" for k, d in space.distributions.items()),
        )  # fmt: skip
        job = 0
        while remaining > 0:
            batch = []
            for _ in range(min(self.n_jobs, remaining)):
                trial = self._new_trial(study, space, job + len(batch))
                if trial is None:
                    break
                batch.append(trial)
            if not batch:
                log.warning("every point of the search space has been tried: stopping")
                break
            overrides = [
                [*space.overrides(t.params), f"hydra.sweeper.trial={t.number}"] for t in batch
            ]
            self.validate_batch_is_legal(overrides)
            try:
                returns = self.launcher.launch(overrides, initial_job_idx=job)
            except BaseException:  # Ctrl-C, a launcher error: no trial is left RUNNING
                for t in batch:
                    t.set_user_attr(OUTCOME_ATTR, "interrupted: the search stopped while it ran")
                    study.tell(t, state=TrialState.FAIL, skip_if_finished=True)
                write_study_record(self.sweep_dir, study, url, self.objectives, self.n_trials)
                raise
            job += len(batch)
            states = [self._tell(study, t, r) for t, r in zip(batch, returns, strict=True)]
            remaining -= len(batch)
            write_study_record(self.sweep_dir, study, url, self.objectives, self.n_trials)
            failures = states.count("FAIL") / len(states)
            if failures > self.max_failure_rate:
                self._end(
                    f"{states.count('FAIL')} of {len(states)} trials failed, above "
                    f"hydra.sweeper.max_failure_rate={self.max_failure_rate}: the search stops."
                )
        write_study_record(self.sweep_dir, study, url, self.objectives, self.n_trials)
        self._write_results(study)

    def _write_results(self, study: optuna.Study) -> None:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            if study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)):
                log.warning("every trial was pruned: no best trial (loosen the pruner, or "
                            "run more trials to continue the study)")  # fmt: skip
                return
            problem = no_result_problem(self.sweep_dir)
            if problem is not None:
                self._end(problem)
            return
        if len(self.directions) == 1:
            best = study.best_trial
            results = {"name": "genlab_optuna", "best_params": best.params,
                       "best_value": best.value, "best_trial": best.number,
                       "best_run_dir": best.user_attrs.get(RUN_DIR_ATTR)}  # fmt: skip
            log.info("best trial %d: %s = %.4g, %s", best.number, self.objectives[0],
                     best.value, best.params)  # fmt: skip
        else:
            results = {
                "name": "genlab_optuna",
                "objectives": self.objectives,
                "solutions": [
                    {
                        "trial": t.number,
                        "params": t.params,
                        "values": t.values,
                        "run_dir": t.user_attrs.get(RUN_DIR_ATTR),
                    }
                    for t in study.best_trials
                ],
            }
        (self.sweep_dir / RESULTS_FILE).write_text(yaml.safe_dump(results, sort_keys=False))

    @staticmethod
    def _end(problem: str) -> None:
        print(f"genlab: error: {problem}", file=sys.stderr)
        sys.exit(1)  # SummarizeSweep still writes summary.md at exit


def _fail(study: optuna.Study, trial: Any, why: str) -> str:
    """Record why a trial failed (its user attributes, the summary) and tell Optuna FAIL."""
    trial.set_user_attr(OUTCOME_ATTR, str(why)[:500])
    study.tell(trial, state=TrialState.FAIL)
    return "FAIL"


def _job_error(job_return: Any) -> str:
    """A failed job's exception, which Hydra re-raises on reading its return value."""
    try:
        job_return.return_value  # noqa: B018
    except BaseException as err:
        return f"{type(err).__name__}: {err}"
    return "failed"


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value

"""An Optuna study as genlab keeps it: where it is stored, which trials are stale, what each
trial's job left behind, and the record (``study.json``) that the summary reads.

A study lives in its ``storage`` (any SQLAlchemy URL; ``null`` puts a SQLite file in the sweep
folder, so jobs in other processes or on other machines reach it too). Rerunning a search with
the same ``storage`` and ``study_name`` continues it: trials left RUNNING by a sweeper that is
gone are marked FAIL, and ``n_trials`` counts every completed or pruned trial of the study.
"""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from genlab.errors import ConfigError
from genlab.sweeps.study_report import STUDY_FILE
from genlab.sweeps.summary import RESULT_FILE
from genlab.utils.atomic import atomic_path

DEFAULT_DB = "optuna.db"  # storage: null -> sqlite:///<sweep dir>/optuna.db
# Trial user attributes the sweeper and the jobs write.
SWEEPER_ATTR = "genlab_sweeper"  # {host, pid, started}: which process asked for the trial
RUN_DIR_ATTR = "run_dir"
DUPLICATE_ATTR = "duplicate_of"  # a proposal that repeated this trial's parameters, not run
OUTCOME_ATTR = "outcome"  # the job's status, or why its trial failed
DONE = (TrialState.COMPLETE, TrialState.PRUNED)


def storage_url(storage: str | None, sweep_dir: str | Path) -> str:
    """The study's storage: the configured URL, else a SQLite file in the sweep folder."""
    if storage:
        return str(storage)
    return f"sqlite:///{(Path(sweep_dir) / DEFAULT_DB).resolve()}"


def shown_url(url: str) -> str:
    """The storage URL without its password, for logs and study.json."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not an SQLAlchemy URL: nothing to hide that we know of
        return url


def _process_started(pid: int) -> str | None:
    """The process's start time in clock ticks (Linux), which tells a reused pid apart."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def sweeper_identity() -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "started": _process_started(pid)}


def _sweeper_alive(identity: dict[str, Any] | None) -> bool | None:
    """Whether the process that asked for a trial still runs: None when it ran on another host
    (this process cannot tell)."""
    if not identity:
        return False
    if identity.get("host") != socket.gethostname():
        return None
    pid = int(identity.get("pid", -1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    started = identity.get("started")
    return started is None or _process_started(pid) == started


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """The study's storage. SQLite waits up to a minute for a lock: jobs in other processes
    write their validations into the same file."""
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except Exception as err:  # bad URL, missing driver, unreachable server
        raise ConfigError(
            f"hydra.sweeper.storage={shown_url(url)}: cannot open it ({type(err).__name__}: "
            f"{err}). Use an SQLAlchemy URL such as sqlite:///optuna.db or "
            "postgresql://user@host/db, or null for a SQLite file in the sweep folder."
        ) from None


def build_pruner(config: Any) -> optuna.pruners.BasePruner:
    """The ``hydra.sweeper.pruner`` config as a pruner (none: NopPruner). The sweeper and each
    job build it from the same config: a job's pruner decides on its own trial."""
    if not config:
        return optuna.pruners.NopPruner()
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    if OmegaConf.is_config(config):
        config = OmegaConf.to_container(config, resolve=True)
    return instantiate(config)


def trial_handle(study: optuna.Study, storage: optuna.storages.BaseStorage, number: int):
    """Trial ``number`` of ``study`` as a live ``optuna.trial.Trial`` (report, prune, attrs),
    found through the storage's public lookups: any process can reach it."""
    study_id = storage.get_study_id_from_name(study.study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    return optuna.trial.Trial(study, trial_id)


def open_study(
    *,
    study_name: str,
    storage: optuna.storages.BaseStorage,
    directions: list[str],
    sampler_factory: Any,
    pruner: optuna.pruners.BasePruner,
) -> optuna.Study:
    """Create the study, or load it when ``storage`` already has one of that name.

    ``sampler_factory(n)`` builds the sampler given how many trials the study already has: a
    seeded sampler must not propose the same points again when a study continues."""
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        directions=directions,
        pruner=pruner,
        load_if_exists=True,
    )
    stored = [d.name.lower() for d in study.directions]
    if stored != [d.lower() for d in directions]:
        raise ConfigError(
            f"hydra.sweeper.study_name={study_name}: the study stored there "
            f"optimises {stored}, this search {directions}: use another study_name, or the "
            "same direction(s) to continue it."
        )
    study.sampler = sampler_factory(len(study.get_trials(deepcopy=False)))
    return study


def fail_stale_trials(
    study: optuna.Study, storage: optuna.storages.BaseStorage
) -> tuple[list[int], list[int]]:
    """Mark FAIL the RUNNING trials whose sweeper is gone (killed, crashed, lost its node).

    Returns (trials marked FAIL, trials left RUNNING: their sweeper still runs here, or runs on
    another host, where this process cannot tell, so they count as in flight)."""
    failed, live = [], []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        alive = _sweeper_alive(trial.user_attrs.get(SWEEPER_ATTR))
        if alive is None or alive:
            live.append(trial.number)
        else:
            trial_handle(study, storage, trial.number).set_user_attr(
                OUTCOME_ATTR, "stale: its sweeper stopped while it ran; marked FAIL"
            )
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            failed.append(trial.number)
    return failed, live


def params_key(params: dict[str, Any]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


def counted(trial: FrozenTrial) -> bool:
    """Trials that ``n_trials`` counts: completed or pruned."""
    return trial.state in DONE


def read_job_result(run_dir: str | Path | None) -> dict[str, Any] | None:
    if not run_dir:
        return None
    path = Path(run_dir) / RESULT_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def objective_value(result: dict[str, Any], key: str) -> float | None:
    """One objective from a job's result.json: the monitor's best value, ``minutes`` (the
    job's wall clock), or any metric the run logged last (``train/epsilon``, ``test/fid``)."""
    if key == result.get("monitor"):
        value = result.get("best_score")
    elif key == "minutes":
        value = result["seconds"] / 60 if result.get("seconds") is not None else None
    else:
        value = (result.get("metrics") or {}).get(key)
    if value is None or not math.isfinite(float(value)):
        return None
    return float(value)


def trial_record(trial: FrozenTrial) -> dict[str, Any]:
    return {
        "number": trial.number,
        "state": trial.state.name,
        "values": trial.values,
        "params": trial.params,
        "intermediate": {str(k): v for k, v in sorted(trial.intermediate_values.items())},
        RUN_DIR_ATTR: trial.user_attrs.get(RUN_DIR_ATTR),
        DUPLICATE_ATTR: trial.user_attrs.get(DUPLICATE_ATTR),
        OUTCOME_ATTR: trial.user_attrs.get(OUTCOME_ATTR),
    }


def write_study_record(
    sweep_dir: str | Path, study: optuna.Study, storage: str, objectives: list[str], n_trials: int
) -> Path:
    """``study.json`` in the sweep folder: the whole study (this sweep's trials and those of
    earlier runs of the same study), written atomically after every batch."""
    record = {
        "study_name": study.study_name,
        "storage": shown_url(storage),
        "directions": [d.name.lower() for d in study.directions],
        "objectives": objectives,
        "n_trials": n_trials,
        "trials": [trial_record(t) for t in study.get_trials(deepcopy=False)],
    }
    path = Path(sweep_dir) / STUDY_FILE
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=1, default=str))
    return path

"""Sweeper settings that cannot work, refused before any job runs, and the one line for a
search none of whose trials gave a value."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from genlab.sweeps.summary import _finished, collect


def sweep_settings_problem(config: Any) -> str | None:
    """The one line saying why a multirun's sweeper or launcher counts cannot work, or None.

    A search with ``n_trials`` <= 0 would run nothing and ``n_jobs`` <= 0 would launch empty
    batches forever; joblib's ``n_jobs=0`` means nothing (-1 is one worker per CPU core).
    Checked before any folder is made, for any sweeper that has these keys."""
    sweeper = config.hydra.get("sweeper") or {}
    launcher = config.hydra.get("launcher") or {}
    n_trials, n_jobs = sweeper.get("n_trials"), sweeper.get("n_jobs")
    if isinstance(n_trials, int) and n_trials < 1:
        return (f"hydra.sweeper.n_trials={n_trials}: a search needs at least one trial: set "
                "hydra.sweeper.n_trials to 1 or more, e.g. hydra.sweeper.n_trials=20.")  # fmt: skip
    if isinstance(n_jobs, int) and n_jobs < 1:
        return (f"hydra.sweeper.n_jobs={n_jobs}: the trials launched at once must be 1 or more: "
                "set hydra.sweeper.n_jobs=1, or the number of jobs the launcher runs in "
                "parallel (hydra.launcher.n_jobs).")  # fmt: skip
    if launcher.get("n_jobs") == 0:
        return ("hydra.launcher.n_jobs=0: joblib would run no job: set the number of parallel "
                "jobs, e.g. hydra.launcher.n_jobs=2 (or -1: one per CPU core).")  # fmt: skip
    return None


class CheckSweep(Callback):
    """Hydra callback, first in ``conf/hydra/default.yaml``: a multirun whose sweeper settings
    cannot work stops with one line before any folder is made or job runs."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        problem = sweep_settings_problem(config)
        if problem is not None:
            print(f"genlab: error: {problem}", file=sys.stderr)
            sys.exit(1)


def no_result_problem(sweep_dir: str | Path) -> str | None:
    """The one line for a sweep none of whose jobs gave its monitor a value (every Optuna
    trial failed, so the study has no best trial), or None when one did or none ran."""
    try:
        jobs = collect(sweep_dir)
    except FileNotFoundError:
        return None
    if _finished(jobs):
        return None
    first = jobs[0]
    monitor = first.result.get("monitor") or "the monitor"
    why = first.result.get("error") or (
        f"finished without a value of {monitor}" if first.status == "ok" else first.status
    )
    why = " ".join(why.split())  # one line, even for an error of several
    why = (why[:300] + " ...") if len(why) > 300 else why.rstrip(".")  # the sentence goes on
    return (
        f"none of the {len(jobs)} trials gave a value of {monitor} to optimise (job "
        f"{first.num}: {why}). "
        f"Fix that and run the search again; every job's outcome is in "
        f"{Path(sweep_dir) / 'summary.md'}."
    )

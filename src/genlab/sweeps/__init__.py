"""Sweeps and searches: what a job records (``result.json``), the multirun summary, and the
Optuna search behind ``hparams_search=...`` (study, search space, pruning, Pareto fronts).

Hydra finds the sweeper through the thin plugin ``hydra_plugins.genlab_sweeper``; everything it
does lives here.
"""

from genlab.sweeps.checks import CheckSweep, no_result_problem, sweep_settings_problem
from genlab.sweeps.summary import (
    RESULT_FILE,
    TABLE_METRICS,
    Job,
    SummarizeSweep,
    best_job,
    collect,
    summarize,
    swept_keys,
    write_result,
)

__all__ = [
    "RESULT_FILE",
    "TABLE_METRICS",
    "CheckSweep",
    "Job",
    "SummarizeSweep",
    "best_job",
    "collect",
    "no_result_problem",
    "summarize",
    "sweep_settings_problem",
    "swept_keys",
    "write_result",
]

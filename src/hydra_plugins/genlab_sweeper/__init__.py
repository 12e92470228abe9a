"""genlab's Optuna sweeper (``hydra/sweeper=genlab_optuna``, chosen by ``conf/hparams_search/``).

hydra-optuna-sweeper's own, with one change: a search in which no trial gave a value ends with
one line naming the first job's error, instead of Optuna's ``ValueError: No trials are completed
yet`` traceback. Hydra instantiates sweepers only from the ``hydra_plugins`` package, hence this
thin class; what it reports comes from ``genlab.sweeps``.
"""

from __future__ import annotations

import sys
from typing import Any

try:  # the `sweeps` extra; without it nothing is registered (train.py names the extra to install)
    from hydra_plugins.hydra_optuna_sweeper import optuna_sweeper as _optuna
except ImportError:
    _optuna = None

if _optuna is not None:

    class GenlabOptunaSweeper(_optuna.OptunaSweeper):
        """``OptunaSweeper`` that ends a search without any result with one line."""

        def setup(self, *, config: Any, **kwargs: Any) -> None:
            self._sweep_dir = str(config.hydra.sweep.dir)
            super().setup(config=config, **kwargs)

        def sweep(self, arguments: list[str]) -> None:
            try:
                return super().sweep(arguments)
            except ValueError:  # Optuna's study.best_trial when no trial completed
                from genlab.sweeps import no_result_problem

                problem = no_result_problem(self._sweep_dir)
                if problem is None:  # some trial did finish: not the case handled here
                    raise
            print(f"genlab: error: {problem}", file=sys.stderr)
            sys.exit(1)  # SummarizeSweep still writes summary.md at exit

"""genlab's Optuna sweeper (``hydra/sweeper=genlab_optuna``, chosen by ``conf/hparams_search/``).

Hydra instantiates sweepers only from the ``hydra_plugins`` package, hence this thin class; the
search itself (study, search space, pruning, resumable studies, Pareto fronts) lives in
``genlab.sweeps.search``. Without the ``sweeps`` extra (Optuna) nothing is registered, and
``train.py`` names the extra to install.
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper

try:
    from genlab.sweeps.search import OptunaSearch
except ImportError:  # optuna missing: the class below is not offered to Hydra
    OptunaSearch = None

if OptunaSearch is not None:

    class GenlabOptunaSweeper(Sweeper):
        """Hydra's side of ``genlab.sweeps.search.OptunaSearch``."""

        def __init__(self, **settings: Any) -> None:
            self.search = OptunaSearch(**settings)

        def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
            self.hydra_context, self.config = hydra_context, config
            self.search.setup(
                hydra_context=hydra_context,
                task_function=task_function,
                config=config,
                validate=self.validate_batch_is_legal,
            )
            self.launcher = self.search.launcher

        def sweep(self, arguments: list[str]) -> None:
            return self.search.sweep(arguments)

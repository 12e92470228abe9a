"""Helpers for the ``train.py``/``eval.py``/``sample.py`` entry points."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from genlab.errors import GenlabError


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Turn a ``GenlabError`` (bad config, missing data) into one line on stderr and exit 1.

    A user who typed ``trainer=gpu`` on a laptop needs the fix, not a 40-line traceback. Bugs
    (any other exception) still raise with their full traceback.

    In a multirun the error is re-raised after its line is printed: Hydra then records that
    job as failed (an Optuna sweep marks the trial FAIL and goes on), where exiting would end
    the whole sweep.
    """
    try:
        yield
    except GenlabError as err:
        print(f"genlab: error: {err}", file=sys.stderr)
        if _in_multirun():
            raise
        sys.exit(1)


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN

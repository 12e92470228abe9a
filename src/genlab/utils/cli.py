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
    """
    try:
        yield
    except GenlabError as err:
        print(f"genlab: error: {err}", file=sys.stderr)
        sys.exit(1)

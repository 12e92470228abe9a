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
    except Exception as err:
        user_error = _user_error(err)
        if user_error is None:
            raise
        print(f"genlab: error: {user_error}", file=sys.stderr)
        sys.exit(1)


def _user_error(err: BaseException | None) -> GenlabError | None:
    """The ``GenlabError`` in an exception's cause chain: OmegaConf wraps errors raised while
    resolving an interpolation (e.g. ``${image_size_of:${data.path}}``)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, GenlabError):
            return err
        seen.add(id(err))
        err = err.__cause__
    return None

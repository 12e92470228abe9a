"""Declared checks for the plain top-level arguments of ``eval.py`` and ``sample.py``.

``validation.check_types`` reads a constructor's type hints; the tasks' own arguments (``n``,
``seed``, ``batch_size``, ...) have no constructor, so each task declares them once, next to
its other constants, as a ``{key: Arg}`` schema:

    ARGS = {"n": Arg("the number of samples to draw", integer(low=1), "64"), ...}
    check_args(cfg, ARGS)   # first thing in run(cfg): before any file or model is loaded

A check returns what is wrong with a value (None when it is fine); ``check_args`` turns the
first problem into one ``ConfigError`` naming the key, the value, what the key is and a value
that works.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from genlab.errors import ConfigError

# A value -> the problem with it, as "needs ..." or a statement of what is wrong; None: fine.
Check = Callable[[Any], "str | None"]

# What pl.seed_everything and numpy accept; torch.Generator would take more, but one seed
# must mean the same everywhere.
SEED_RANGE = (0, 2**32 - 1)


@dataclass(frozen=True)
class Arg:
    """One argument: what it is (for the message), its check, and a value that works."""

    about: str
    check: Check
    example: str


def check_args(cfg: DictConfig, schema: Mapping[str, Arg]) -> None:
    """Raise a one-line ``ConfigError`` for the first argument of ``cfg`` its check refuses
    (keys ``cfg`` does not have are skipped)."""
    for key, arg in schema.items():
        if key not in cfg:  # a hand-built config without it: the task's default applies
            continue
        value = cfg.get(key)
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
        problem = arg.check(value)
        if problem is not None:
            raise ConfigError(
                f"{key}={value!r} ({type(value).__name__}): {problem}; {key} is {arg.about}. "
                f"Pass e.g. {key}={arg.example}."
            )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # seed=true is not 1


def integer(low: int | None = None, high: int | None = None) -> Check:
    """An int (not a bool, not 1e3) in [low, high]."""
    if low is not None and high is not None:
        needs = f"needs an integer from {low} to {high}"
    elif low is not None:
        needs = f"needs an integer >= {low}"
    else:
        needs = "needs an integer"

    def check(value: Any) -> str | None:
        if not _is_int(value):
            return needs
        if (low is not None and value < low) or (high is not None and value > high):
            return needs
        return None

    return check


def seed() -> Check:
    return integer(*SEED_RANGE)


def choice(options: Sequence[str]) -> Check:
    needs = "needs one of " + ", ".join(options)
    return lambda value: None if value in options else needs


def pattern(regex: str, needs: str) -> Check:
    """A string matching ``regex`` as a whole; ``needs`` says which in words."""
    compiled = re.compile(regex)
    return lambda value: (
        None if isinstance(value, str) and compiled.fullmatch(value) else f"needs {needs}"
    )


def optional_path() -> Check:
    """A file name or null (a number would reach ``Path()`` as an int)."""
    return lambda value: (
        None if value is None or (isinstance(value, str) and value) else "needs a file path"
    )


def names() -> Check:
    """A non-empty list of names, or one name (``metrics=fid``)."""

    def check(value: Any) -> str | None:
        if isinstance(value, str) and value:
            return None
        if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
            return None
        return "needs a list of names, e.g. [a,b], or one name"

    return check


def output_file(suffixes: Sequence[str]) -> Check:
    """A file name with one of ``suffixes`` that can be created: not a folder, not under a
    file, in a writable folder (checked before the work, which would be lost at the write)."""

    def check(value: Any) -> str | None:
        if not isinstance(value, str) or not value:
            return "needs a file path"
        path = Path(value).expanduser()
        if path.suffix not in suffixes:
            return f"the suffix must be one of {', '.join(suffixes)}"
        if path.is_dir():
            return "that is a folder, not a file name"
        # The nearest folder that exists: the missing ones below it are created at the write.
        existing = path.parent
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            return f"{existing} is a file, so no folder can be made under it"
        if not os.access(existing, os.W_OK | os.X_OK):
            return f"the folder {existing} is not writable"
        try:  # os.access says yes to root everywhere, and knows nothing of read-only mounts
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as err:
            return f"the folder {existing} is not writable ({err.strerror})"
        return None

    return check

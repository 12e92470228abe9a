"""One vocabulary of value rules, for constructors and command-line arguments alike.

A rule says what is wrong with a value (``violation``: a phrase such as "must be >= 1", or None
when the value is fine) and what it wants (``describe``). The same rule objects serve twice:

    batch_size: Annotated[int, AT_LEAST_ONE]          # a constructor's argument: validation's
                                                      # check_types reads it at start-up
    "n": Arg("the number of samples to draw", Range(ge=1, integer=True), "64")
                                                      # a task's argument: arguments.check_args

so a bound is declared once, next to what it bounds, and reads the same wherever it is refused.
Write a new rule as a small class with these two methods; nothing needs registering.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from genlab.config.suggest import closest_keys


@runtime_checkable
class Rule(Protocol):
    def violation(self, value: Any) -> str | None:
        """What is wrong with ``value`` ("must be > 0", "needs one of a, b"); None: fine."""

    def describe(self) -> str:
        """What the rule wants, as a noun phrase ("an integer >= 1", "one of a, b")."""


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # seed=true is not 1


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(x: float | None) -> str:
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True)
class Range:
    """Bounds of a number: ``Range(gt=0, le=1)`` is (0, 1]. ``integer=True`` also refuses
    floats and booleans; without it, as a constructor hint, the type is the hint's business."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    integer: bool = False

    def contains(self, value: float) -> bool:
        return (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )

    def violation(self, value: Any) -> str | None:
        if self.integer:
            ok = is_int(value) and self.contains(value)
            return None if ok else f"needs {self.describe()}"
        if not is_number(value):
            return f"needs {self.describe()}"
        return None if self.contains(value) else f"must be {self.bounds()}"

    def describe(self) -> str:
        if self.integer:
            if self.ge is not None and self.le is not None:  # seed: "from 0 to 4294967295"
                return f"an integer from {_number(self.ge)} to {_number(self.le)}"
            return " ".join(filter(None, ("an integer", self.bounds())))
        return " ".join(filter(None, ("a number", self.bounds())))

    def bounds(self) -> str:
        """The bounds alone: "> 0", "in [0, 1)"; empty when there are none."""
        low = "[" if self.ge is not None else "(" if self.gt is not None else None
        high = "]" if self.le is not None else ")" if self.lt is not None else None
        lo = _number(self.ge if self.ge is not None else self.gt)
        hi = _number(self.le if self.le is not None else self.lt)
        if low and high:
            return f"in {low}{lo}, {hi}{high}"
        if low:
            return f"{'>=' if low == '[' else '>'} {lo}"
        if high:
            return f"{'<=' if high == ']' else '<'} {hi}"
        return ""


@dataclass(frozen=True, init=False)
class OneOf:
    """One of a few values: ``OneOf("min", "max")``; a near miss is named ("did you mean")."""

    options: tuple[Any, ...]

    def __init__(self, *options: Any) -> None:
        object.__setattr__(self, "options", options)

    def violation(self, value: Any) -> str | None:
        if value in self.options:
            return None
        problem = f"needs {self.describe()}"
        names = [str(o) for o in self.options]
        close = closest_keys(value, names, n=1) if isinstance(value, str) else []
        return f"{problem} (did you mean {close[0]}?)" if close else problem

    def describe(self) -> str:
        return "one of " + ", ".join(map(str, self.options))


@dataclass(frozen=True)
class OrNone:
    """``rule``, or null (a setting that is off)."""

    rule: Rule

    def violation(self, value: Any) -> str | None:
        return None if value is None else self.rule.violation(value)

    def describe(self) -> str:
        return f"{self.rule.describe()} or null"


@dataclass(frozen=True)
class Pattern:
    """A string matching ``regex`` as a whole; ``wanted`` says which in words."""

    regex: str
    wanted: str

    def violation(self, value: Any) -> str | None:
        ok = isinstance(value, str) and re.fullmatch(self.regex, value) is not None
        return None if ok else f"needs {self.wanted}"

    def describe(self) -> str:
        return self.wanted


@dataclass(frozen=True)
class FilePath:
    """A file name (a number would reach ``Path()`` as an int)."""

    def violation(self, value: Any) -> str | None:
        return None if isinstance(value, str) and value else f"needs {self.describe()}"

    def describe(self) -> str:
        return "a file path"


@dataclass(frozen=True)
class Names:
    """A non-empty list of names, or one name (``metrics=fid``)."""

    def violation(self, value: Any) -> str | None:
        if isinstance(value, str) and value:
            return None
        if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
            return None
        return f"needs {self.describe()}"

    def describe(self) -> str:
        return "a list of names, e.g. [a,b], or one name"


@dataclass(frozen=True, init=False)
class OutputFile:
    """A file name with one of ``suffixes`` that can be created: not a folder, not under a
    file, in a writable folder (checked before the work, which would be lost at the write):
    ``OutputFile(".npz", ".pt")``."""

    suffixes: tuple[str, ...]

    def __init__(self, *suffixes: str) -> None:
        object.__setattr__(self, "suffixes", suffixes)

    def violation(self, value: Any) -> str | None:
        if not isinstance(value, str) or not value:
            return "needs a file path"
        path = Path(value).expanduser()
        if path.suffix not in self.suffixes:
            return f"the suffix must be one of {', '.join(self.suffixes)}"
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

    def describe(self) -> str:
        return f"a writable file path ending in {' or '.join(self.suffixes)}"


# The bounds most parameters need.
POSITIVE = Range(gt=0)
NON_NEGATIVE = Range(ge=0)
AT_LEAST_ONE = Range(ge=1)
FRACTION = Range(gt=0, le=1)  # a share of something: (0, 1]
DECAY = Range(gt=0, lt=1)  # an EMA decay, a momentum: (0, 1)
# What pl.seed_everything and numpy accept; torch.Generator would take more, but one seed
# must mean the same everywhere.
SEED = Range(ge=0, le=2**32 - 1, integer=True)
COUNT = Range(ge=1, integer=True)  # a task argument counting something: n, batch_size
MONITOR_MODE = OneOf("min", "max")

"""Schemas for the plain top-level arguments of ``train.py``, ``eval.py`` and ``sample.py``.

A constructor's arguments carry their rules as ``Annotated`` hints (validation.check_types);
the tasks' own arguments (``n``, ``seed``, ``batch_size``, ...) have no constructor, so each task
declares them once, next to its other constants, with the same rules (``genlab.config.rules``):

    ARGS = {"n": Arg("the number of samples to draw", COUNT, "64"), ...}
    check_args(cfg, ARGS)   # first thing in run(cfg): before any file or model is loaded

``check_args`` turns the first problem into one ``ConfigError`` naming the key, the value, what
the key is and a value that works.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from omegaconf import DictConfig, ListConfig, OmegaConf

from genlab.config.rules import Rule
from genlab.errors import ConfigError


@dataclass(frozen=True)
class Arg:
    """One argument: what it is (for the message), its rule, and a value that works."""

    about: str
    rule: Rule
    example: str


def check_args(cfg: DictConfig, schema: Mapping[str, Arg]) -> None:
    """Raise a one-line ``ConfigError`` for the first argument of ``cfg`` its rule refuses
    (keys ``cfg`` does not have are skipped)."""
    for key, arg in schema.items():
        if key not in cfg:  # a hand-built config without it: the task's default applies
            continue
        value = cfg.get(key)
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
        problem = arg.rule.violation(value)
        if problem is not None:
            raise ConfigError(
                f"{key}={value!r} ({type(value).__name__}): {problem}; {key} is {arg.about}. "
                f"Pass e.g. {key}={arg.example}."
            )

"""A search space in Hydra's override syntax, as Optuna distributions and back.

``hydra.sweeper.params`` (and sweep overrides on the command line) use Hydra's grammar:

    model.optimizer.lr: tag(log, interval(5e-5, 1e-3))   -> FloatDistribution(log=True)
    model.beta: interval(0.5, 2.0)                        -> FloatDistribution
    model.n_critic: range(1, 6)                           -> IntDistribution(1, 5)
    model.latent_dim: choice(32, 64, 128)   (or 32,64,128) -> CategoricalDistribution
    model.ema: true                                       -> fixed for every trial

A trial's parameters become overrides again with the text the user wrote for a choice, so a
string such as ``choice(constant, linear)`` round-trips exactly.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from genlab.errors import ConfigError


@dataclass
class SearchSpace:
    """The swept parameters (Optuna distributions) and the overrides every trial shares."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    fixed: list[str] = field(default_factory=list)
    # For each choice parameter, each value's text as written (value -> override text).
    choice_texts: dict[str, dict[Any, str]] = field(default_factory=dict)

    def overrides(self, params: dict[str, Any]) -> list[str]:
        """A trial's parameters as Hydra overrides, after the shared ones."""
        swept = []
        for key, value in params.items():
            text = self.choice_texts.get(key, {}).get(value)
            swept.append(f"{key}={text if text is not None else _text(value)}")
        return [*self.fixed, *swept]

    def size(self) -> int | None:
        """How many distinct points the space has, or None when a parameter is continuous."""
        total = 1
        for dist in self.distributions.values():
            if isinstance(dist, CategoricalDistribution):
                total *= len(dist.choices)
            elif isinstance(dist, IntDistribution):
                total *= (dist.high - dist.low) // dist.step + 1
            else:
                return None
        return total

    def points(self) -> list[dict[str, Any]]:
        """Every point of a finite space (see ``size``), in a fixed order."""
        axes = []
        for dist in self.distributions.values():
            if isinstance(dist, CategoricalDistribution):
                axes.append(list(dist.choices))
            elif isinstance(dist, IntDistribution):
                axes.append(list(range(dist.low, dist.high + 1, dist.step)))
            else:
                raise ValueError("a continuous parameter has no finite list of points")
        keys = list(self.distributions)
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*axes)]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return repr(value)  # 1.0, not 1: the config keeps its float type
    return str(value)


def _distribution(override: Override) -> tuple[BaseDistribution, dict[Any, str] | None]:
    key = override.get_key_element()
    value = override.value()
    if isinstance(value, ChoiceSweep):
        choices = list(override.sweep_iterator())
        texts = list(override.sweep_string_iterator())
        if len(set(map(repr, choices))) != len(choices):
            raise ConfigError(f"{key}: choice({', '.join(texts)}) repeats a value; list each once.")
        unsupported = [c for c in choices if not isinstance(c, (str, int, float, bool, type(None)))]
        if unsupported:
            raise ConfigError(
                f"{key}: choice values must be numbers, strings, booleans or null, got "
                f"{unsupported[0]!r}: sweep a config group or a scalar instead."
            )
        return CategoricalDistribution(choices), dict(zip(choices, texts, strict=True))
    if isinstance(value, RangeSweep):
        values = list(override.sweep_iterator())
        if not values:
            raise ConfigError(f"{key}: {override.input_line} is empty: give range(start, stop).")
        step = value.step or 1
        if all(isinstance(v, int) for v in values) and isinstance(step, int):
            return IntDistribution(values[0], values[-1], step=step), None
        return FloatDistribution(float(values[0]), float(values[-1]), step=float(step)), None
    if isinstance(value, IntervalSweep):
        low, high = float(value.start), float(value.end)
        log = "log" in value.tags
        if not low < high:
            raise ConfigError(f"{key}: interval({low}, {high}) needs start < end.")
        if log and low <= 0:
            raise ConfigError(f"{key}: tag(log, interval({low}, {high})) needs start > 0.")
        return FloatDistribution(low, high, log=log), None
    raise ConfigError(f"{key}: {override.input_line} cannot be searched: use choice, range or "
                      "interval.")  # fmt: skip


def search_space(params: dict[str, Any] | None, arguments: list[str]) -> SearchSpace:
    """The space from ``hydra.sweeper.params`` and the command line's overrides (which win for
    the same key; a plain ``key=value`` there fixes a parameter for every trial)."""
    lines = [f"{k}={v}" for k, v in (params or {}).items()]
    parser = OverridesParser.create()
    merged: dict[str, Override] = {}
    for override in parser.parse_overrides(lines) + parser.parse_overrides(list(arguments)):
        merged[override.get_key_element()] = override
    space = SearchSpace()
    for key, override in merged.items():
        if not override.is_sweep_override():
            space.fixed.append(
                override.input_line or f"{key}={override.get_value_element_as_str()}"
            )
            continue
        dist, texts = _distribution(override)
        if isinstance(dist, FloatDistribution) and not math.isfinite(dist.high - dist.low):
            raise ConfigError(f"{key}: the interval must be finite.")
        space.distributions[key] = dist
        if texts is not None:
            space.choice_texts[key] = texts
    return space

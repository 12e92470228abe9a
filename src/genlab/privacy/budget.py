"""The privacy budget: how many private steps ``target_epsilon`` allows, what to do when they
are spent (``on_budget``), and the budget's state in checkpoints.

The DP optimizer (``privacy/optimizer.py``) asks ``reached()`` before every private step and
refuses the step once the budget is spent and ``on_budget=stop``; the callback asks it before
every batch, so a genlab model ends its epoch before a batch it could not finish.
"""

from __future__ import annotations

import logging
from typing import Any

from genlab.config.rules import OneOf
from genlab.privacy.accountant import Accountant

log = logging.getLogger(__name__)

# What to do when the budget is spent: stop training, or warn once and overspend.
ON_BUDGET = OneOf("stop", "warn")


class Budget:
    """The accountant of one run and the limit ``target_epsilon`` puts on it."""

    def __init__(self, target_epsilon: float | None, delta: float, on_budget: str) -> None:
        self.target_epsilon, self.delta, self.on_budget = target_epsilon, delta, on_budget
        self.accountant = Accountant()
        self.max_steps: int | None = None  # private steps the target allows, set by settle()
        self._warned = False

    def settle(self, noise_multiplier: float, sample_rate: float) -> None:
        """Fix the number of private steps (those taken included) that stay within
        ``target_epsilon`` when every step to come uses this noise and sample rate."""
        if self.target_epsilon is not None:
            self.max_steps = self.accountant.steps_within(
                self.target_epsilon, self.delta, noise_multiplier, sample_rate
            )

    @property
    def steps(self) -> int:
        return self.accountant.steps

    def epsilon(self) -> float:
        """The epsilon spent so far at ``delta`` (0 before the first private step)."""
        return self.accountant.epsilon(self.delta)

    def reached(self) -> bool:
        """True when the next private step would overspend ``target_epsilon``."""
        return self.max_steps is not None and self.steps >= self.max_steps

    def over_budget_action(self) -> bool:
        """What to do at the budget: True means stop training (said once, in the log)."""
        if not self._warned:
            action = (
                "stopping training"
                if self.on_budget == "stop"
                else "continuing (privacy.on_budget=warn) and overspending"
            )
            log.warning(
                "privacy budget reached: epsilon %.3f of target_epsilon %s (delta %g) after "
                "%d private steps: %s.",
                self.epsilon(), self.target_epsilon, self.delta, self.steps, action,
            )  # fmt: skip
            self._warned = True
        return self.on_budget == "stop"

    def state(self, noise_multiplier: float | None, max_grad_norm: float) -> dict[str, Any]:
        """The checkpoint entry: the accountant's history and what it amounts to."""
        return {
            "history": [tuple(h) for h in self.accountant.history],
            "epsilon": self.epsilon(),
            "delta": self.delta,
            "noise_multiplier": noise_multiplier,
            "max_grad_norm": max_grad_norm,
        }

    def load_state(self, state: dict[str, Any]) -> float | None:
        """Restore the accountant from a checkpoint entry; returns the noise multiplier the run
        that wrote it used (a run that chose its noise keeps it on resume)."""
        self.accountant.history = [tuple(h) for h in state["history"]]
        return state["noise_multiplier"]

"""The DP optimizer: every step of the private nets' optimizer is a DP-SGD step, and none is
taken beyond the budget.

genlab's ``DPOptimizer`` is Opacus' ``DPOptimizer`` (clip each per-sample gradient to
``max_grad_norm``, sum, add Gaussian noise of standard deviation ``noise_multiplier *
max_grad_norm``, divide by the expected batch size) with two guards of its own:

- a step without per-sample gradients is refused (Opacus would take a plain, non-private one);
- once the budget is spent (``on_budget=stop``) no step is taken and the trainer is asked to
  stop. The guard sits here, in the only object that can move a private net, so any model (a
  plain LightningModule too, whatever hooks it overrides) cannot take one more private step.

Each step taken is counted by the budget's accountant. Imports Opacus: the callback imports
this module when it builds the optimizer, not before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from opacus.optimizers import DPOptimizer as OpacusDPOptimizer

from genlab.errors import ConfigError
from genlab.privacy.budget import Budget


def check_per_sample(optimizer: torch.optim.Optimizer) -> None:
    """Refuse to step without per-sample gradients: Opacus' optimizer would then take a plain,
    non-private step."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.requires_grad and getattr(p, "grad_sample", None) is None:
                raise RuntimeError(
                    "privacy: a private parameter has no per-sample gradient; refusing a "
                    "non-private step (were the per-sample hooks removed, or the net frozen in "
                    "its forward pass?)"
                )


class DPOptimizer(OpacusDPOptimizer):
    """``optimizer`` made private (the class name is the LR monitor's key, ``lr-DPOptimizer``,
    as in runs before this subclass: keep it). The noise multiplier, sample rate and expected batch size
    are settled when training starts (``settle``); ``on_stop`` asks the trainer to stop."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        noise_multiplier: float | None,
        max_grad_norm: float,
        budget: Budget,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(
            optimizer,
            noise_multiplier=noise_multiplier or 0.0,  # settled in settle() when chosen
            max_grad_norm=max_grad_norm,
            expected_batch_size=1,
            loss_reduction="mean",
        )
        self.budget, self.on_stop = budget, on_stop
        self.sample_rate: float | None = None
        self.attach_step_hook(self._count_step)

    def settle(self, noise_multiplier: float, sample_rate: float, expected_batch_size: int) -> None:
        self.noise_multiplier, self.sample_rate = noise_multiplier, sample_rate
        # The summed noisy gradient is divided by the *expected* batch size: dividing by the
        # drawn one would make the noise scale depend on the data.
        self.expected_batch_size = expected_batch_size

    def _count_step(self, optimizer: OpacusDPOptimizer) -> None:
        self.budget.accountant.step(self.noise_multiplier, self.sample_rate)

    def pre_step(self, closure: Callable[[], float] | None = None) -> bool | None:
        check_per_sample(self)
        return super().pre_step(closure)

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        if self.budget.reached() and self.budget.over_budget_action():
            if closure is not None:  # the caller's work is done, only the step is refused
                with torch.enable_grad():
                    closure()
            self.zero_grad(set_to_none=True)  # this batch's per-sample gradients go unused
            if self.on_stop is not None:
                self.on_stop()
            return None
        return super().step(closure)


def wrap_private(
    optimizers: Iterable[torch.optim.Optimizer],
    private: set[torch.nn.Parameter],
    owner: str,
    make: Callable[[torch.optim.Optimizer], DPOptimizer],
) -> list[torch.optim.Optimizer]:
    """``optimizers`` with the one over the ``private`` parameters replaced by ``make(it)``;
    an optimizer mixing private and other parameters, or several private ones, is refused
    (``owner``: the model's class name, for the message)."""
    wrapped: list[torch.optim.Optimizer] = []
    found = False
    for optimizer in optimizers:
        params = {p for group in optimizer.param_groups for p in group["params"]}
        if params & private:
            if params - private:
                raise ConfigError(
                    f"privacy.enabled=true: an optimizer of {owner} trains private and "
                    "non-private parameters together; give the private nets (private_nets()) "
                    "an optimizer of their own."
                )
            if found:  # one accountant, one noise: one optimizer
                raise ConfigError(
                    f"privacy.enabled=true: {owner} steps its private nets with several "
                    "optimizers; DP-SGD here needs them under one."
                )
            optimizer, found = make(optimizer), True
        wrapped.append(optimizer)
    return wrapped

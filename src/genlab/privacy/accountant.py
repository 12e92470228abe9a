"""The privacy spent: an RDP accountant (Mironov, 2017) over the private steps taken.

Each private step is one entry of (noise multiplier, sample rate) in Opacus' ``RDPAccountant``
history; the epsilon at ``delta`` follows from that history alone, so a checkpoint that keeps
the history keeps the privacy spent. Opacus is imported on first use: ``import genlab.privacy``
stays cheap for runs without privacy.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opacus.accountants import RDPAccountant

# One history entry: (noise multiplier, sample rate, steps taken with them).
Entry = tuple[float, float, int]


def _rdp(history: list[Entry]) -> RDPAccountant:
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [*history]
    return accountant


class Accountant:
    """The private steps taken so far and the epsilon they spend."""

    def __init__(self) -> None:
        self.history: list[Entry] = []

    def step(self, noise_multiplier: float, sample_rate: float) -> None:
        """Count one private step (merged into the last entry when its settings repeat)."""
        accountant = _rdp(self.history)
        accountant.step(noise_multiplier=noise_multiplier, sample_rate=sample_rate)
        self.history = accountant.history

    @property
    def steps(self) -> int:
        return sum(n for _, _, n in self.history)

    def epsilon(self, delta: float) -> float:
        """The epsilon spent so far at ``delta`` (0 before the first private step)."""
        return _rdp(self.history).get_epsilon(delta) if self.history else 0.0

    def steps_within(
        self, epsilon: float, delta: float, noise_multiplier: float, sample_rate: float
    ) -> int:
        """The largest total number of private steps (those taken so far included) whose
        epsilon at ``delta`` stays within ``epsilon``, the steps to come taken with
        ``noise_multiplier`` and ``sample_rate``; a bisection over the accountant."""
        taken = self.steps

        def spent(steps: int) -> float:
            history = [*self.history]
            if steps > taken:
                history.append((noise_multiplier, sample_rate, steps - taken))
            return _rdp(history).get_epsilon(delta) if history else 0.0

        low, high = taken, max(1, taken) * 2
        if spent(low) > epsilon:
            return low
        while spent(high) <= epsilon:
            low, high = high, high * 2
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (mid, high) if spent(mid) <= epsilon else (low, mid)
        return low


def noise_for(target_epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """The noise multiplier with which ``steps`` private steps spend ``target_epsilon``."""
    from opacus.accountants.utils import get_noise_multiplier

    with warnings.catch_warnings():
        # The bisection probes tiny noise levels, where Opacus warns that the RDP orders run
        # out; the noise it settles on is not affected.
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        return get_noise_multiplier(
            target_epsilon=target_epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant="rdp",
        )

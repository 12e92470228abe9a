"""Differentially private training (DP-SGD, Abadi et al., 2016) with Opacus.

    python train.py experiment=dp_gan_mnist                     # (epsilon, delta) = (10, 1e-5)
    python train.py model=vae model.privacy.enabled=true model.privacy.target_epsilon=1

Only the nets that touch real images are private: the discriminator of a GAN (the generator
learns from D alone, so it inherits D's guarantee as post-processing), the encoder and decoder
of a VAE. For those, every optimizer step

1. computes one gradient per training image (Opacus' per-sample hooks on the nets, which stay
   plain modules, so checkpoint keys do not change),
2. clips each to ``max_grad_norm``, sums them and adds Gaussian noise of standard deviation
   ``noise_multiplier * max_grad_norm`` (Opacus' ``DPOptimizer``),

on batches drawn by Poisson sampling (``data.poisson_sampling``, on by default with privacy).
An RDP accountant (Mironov, 2017) turns (noise, sample rate, steps) into the epsilon spent at
``delta``: ``train/epsilon`` is logged every epoch and saved in checkpoints, and training stops
(``on_budget=stop``) or warns (``warn``) when ``target_epsilon`` is reached. With
``noise_multiplier: null`` the noise is chosen so that ``trainer.max_epochs`` spend exactly
``target_epsilon``.

A GAN's D step pairs real image i with fake image i: one "sample" is the sum of both terms of
D's loss, and removing a real image changes exactly one clipped per-sample gradient.
BatchNorm layers of private nets (they mix images of a batch) become GroupNorm; layers Opacus
cannot handle, double backward (gradient penalty, R1) and spectral norm are refused.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from genlab.errors import ConfigError

log = logging.getLogger(__name__)

ON_BUDGET = ("stop", "warn")


class DifferentialPrivacy:
    """The ``model.privacy`` settings and, once training starts, the DP-SGD machinery."""

    def __init__(
        self,
        enabled: bool = False,
        noise_multiplier: float | None = 1.0,
        max_grad_norm: float = 1.0,
        target_epsilon: float | None = None,
        delta: float = 1e-5,
        on_budget: str = "stop",
    ) -> None:
        if on_budget not in ON_BUDGET:
            raise ConfigError(f"model.privacy.on_budget={on_budget!r}: choose one of {ON_BUDGET}.")
        if enabled:
            if noise_multiplier is None and target_epsilon is None:
                raise ConfigError(
                    "model.privacy.noise_multiplier=null picks the noise for a target budget: "
                    "set model.privacy.target_epsilon too (e.g. 10), or give the noise."
                )
            if noise_multiplier is not None and noise_multiplier <= 0:
                raise ConfigError(
                    f"model.privacy.noise_multiplier={noise_multiplier} must be > 0: without "
                    "noise clipping alone gives no privacy guarantee."
                )
            if max_grad_norm <= 0:
                raise ConfigError(f"model.privacy.max_grad_norm={max_grad_norm} must be > 0.")
            if target_epsilon is not None and target_epsilon <= 0:
                raise ConfigError(f"model.privacy.target_epsilon={target_epsilon} must be > 0.")
            if not 0 < delta < 1:
                raise ConfigError(f"model.privacy.delta={delta} must be in (0, 1), e.g. 1e-5.")
        self.enabled = enabled
        self.noise_multiplier, self.max_grad_norm = noise_multiplier, max_grad_norm
        self.target_epsilon, self.delta, self.on_budget = target_epsilon, delta, on_budget
        self.sample_rate: float | None = None
        self.max_steps: int | None = None  # private steps the target budget allows
        self._hooks: list = []  # Opacus GradSampleModules, kept out of the module tree
        self._optimizer = None  # the DPOptimizer made by private_optimizer()
        self._accountant = None
        self._warned = False

    # --- building the model -------------------------------------------------------------------
    def make_private(self, net: nn.Module, role: str) -> nn.Module:
        """``net`` ready for per-sample gradients: BatchNorm -> GroupNorm, in-place activations
        off (Opacus' backward hooks cannot see through them); unsupported layers refused."""
        from opacus.validators import ModuleValidator
        from torch.nn.utils import parametrize

        # Spectral/weight norm compute the weight in the forward pass: the per-sample hooks
        # would see the computed weight, not the parameters that are stepped.
        parametrized = [
            n or "(the net)" for n, m in net.named_modules() if parametrize.is_parametrized(m)
        ]
        if parametrized:
            raise ConfigError(
                f"model.privacy.enabled=true: the {role}'s layers {', '.join(parametrized)} have "
                "weight parametrisations (spectral or weight norm), which DP-SGD's per-sample "
                f"gradients do not support. Build the {role} without them (model.spectral_norm="
                "false) or disable privacy."
            )
        batch_norms = nn.modules.batchnorm._BatchNorm
        swapped = [n for n, m in net.named_modules() if isinstance(m, batch_norms)]
        if swapped:
            net = ModuleValidator.fix(net)
            log.info("privacy: %s BatchNorm -> GroupNorm at %s", role, ", ".join(swapped))
        for module in net.modules():
            if getattr(module, "inplace", False):
                module.inplace = False
        errors = ModuleValidator.validate(net, strict=False)
        if errors:
            raise ConfigError(
                f"model.privacy.enabled=true: the {role} has layers DP-SGD cannot train: "
                + "; ".join(str(e) for e in errors)
                + f". Use a {role} without them (e.g. norm: layer) or disable privacy."
            )
        return net

    # --- training -----------------------------------------------------------------------------
    def private_optimizer(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """Wrap the optimizer of the private nets: per-sample clipping plus noise, and a step
        hook that feeds the accountant. (Noise and batch size are settled in ``start``.)"""
        from opacus.optimizers import DPOptimizer

        dp = DPOptimizer(
            optimizer,
            noise_multiplier=self.noise_multiplier or 0.0,  # set in start() when chosen
            max_grad_norm=self.max_grad_norm,
            expected_batch_size=1,
            loss_reduction="mean",
        )
        dp.attach_step_hook(self._count_step)
        self._optimizer = dp  # start() settles its noise and batch size
        return dp

    def start(
        self,
        nets: Mapping[str, nn.Module],
        loader: object,
        max_epochs: int,
        steps_per_epoch: int,
    ) -> None:
        """At the start of fit: attach the per-sample hooks, read the loader's sample rate and
        settle the noise and the step budget."""
        from opacus.grad_sample import GradSampleModule

        self.sample_rate = getattr(loader, "sample_rate", None)
        if not self.sample_rate:
            raise ConfigError(
                "model.privacy.enabled=true needs Poisson sampling for its privacy accounting: "
                "set data.poisson_sampling=true (the default follows model.privacy.enabled; "
                "data.on_device and DDP do not support it)."
            )
        train_size = len(loader.dataset)  # type: ignore[attr-defined]
        if self.delta >= 1 / train_size:
            log.warning(
                "privacy: delta=%g is not below 1/N = %g (N = %d training images): a "
                "mechanism that publishes one image at random would meet it. Use delta < 1/N.",
                self.delta, 1 / train_size, train_size,
            )  # fmt: skip
        if self.noise_multiplier is None:
            from opacus.accountants.utils import get_noise_multiplier

            with warnings.catch_warnings():
                # The bisection probes tiny noise levels, where Opacus warns that the RDP
                # orders run out; the noise it settles on is not affected.
                warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
                self.noise_multiplier = get_noise_multiplier(
                    target_epsilon=self.target_epsilon,
                    target_delta=self.delta,
                    sample_rate=self.sample_rate,
                    steps=max_epochs * steps_per_epoch,
                    accountant="rdp",
                )
            log.info(
                "privacy: noise_multiplier %.4f spends epsilon %g in %d epochs",
                self.noise_multiplier, self.target_epsilon, max_epochs,
            )  # fmt: skip
        optimizer = self._optimizer
        optimizer.noise_multiplier = self.noise_multiplier
        # The summed noisy gradient is divided by the *expected* batch size: dividing by the
        # drawn one would make the noise scale depend on the data.
        optimizer.expected_batch_size = loader.expected_batch_size  # type: ignore[attr-defined]
        if self.target_epsilon is not None:
            self.max_steps = self._steps_within(self.target_epsilon)
        # The first layer's input needs no gradient; Opacus' hook fires anyway, as intended.
        warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients")
        self._hooks = [GradSampleModule(net) for net in nets.values()]
        for hooks in self._hooks:
            hooks.disable_hooks()  # only inside recording(): G's step also runs through D

    def stop(self) -> None:
        """Remove the per-sample hooks (end of fit)."""
        for hooks in self._hooks:
            hooks._close()
        self._hooks = []

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Forward and backward passes inside record per-sample gradients."""
        for hooks in self._hooks:
            hooks.enable_hooks()
        try:
            yield
        finally:
            for hooks in self._hooks:
                hooks.disable_hooks()

    @staticmethod
    def check_per_sample(optimizer: torch.optim.Optimizer) -> None:
        """Refuse to step without per-sample gradients: Opacus' optimizer would then take a
        plain, non-private step."""
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.requires_grad and getattr(p, "grad_sample", None) is None:
                    raise RuntimeError(
                        "privacy: a private parameter has no per-sample gradient; refusing a "
                        "non-private step (was its forward pass outside privacy.recording()?)"
                    )

    # --- accounting ---------------------------------------------------------------------------
    @property
    def accountant(self):
        if self._accountant is None:
            from opacus.accountants import RDPAccountant

            self._accountant = RDPAccountant()
        return self._accountant

    def _count_step(self, optimizer) -> None:
        self.accountant.step(
            noise_multiplier=optimizer.noise_multiplier, sample_rate=self.sample_rate
        )

    @property
    def steps(self) -> int:
        return sum(n for _, _, n in self.accountant.history)

    def epsilon(self) -> float:
        """The epsilon spent so far at ``delta`` (0 before the first private step)."""
        return self.accountant.get_epsilon(self.delta) if self.accountant.history else 0.0

    def _steps_within(self, epsilon: float) -> int:
        """The largest total number of private steps (those taken so far included) whose
        epsilon stays within ``epsilon``; a bisection over the accountant."""
        from opacus.accountants import RDPAccountant

        def spent(steps: int) -> float:
            probe = RDPAccountant()
            probe.history = [*self.accountant.history]
            if steps > self.steps:
                probe.history.append((self.noise_multiplier, self.sample_rate, steps - self.steps))
            return probe.get_epsilon(self.delta) if probe.history else 0.0

        low, high = self.steps, max(1, self.steps) * 2
        if spent(low) > epsilon:
            return low
        while spent(high) <= epsilon:
            low, high = high, high * 2
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (mid, high) if spent(mid) <= epsilon else (low, mid)
        return low

    def budget_reached(self) -> bool:
        """True when the next private step would overspend ``target_epsilon``."""
        return self.max_steps is not None and self.steps >= self.max_steps

    def over_budget_action(self) -> bool:
        """What to do at the budget: True means stop training (after logging why)."""
        message = (
            f"privacy budget reached: epsilon {self.epsilon():.3f} of target_epsilon "
            f"{self.target_epsilon} (delta {self.delta:g}) after {self.steps} private steps"
        )
        if not self._warned:
            action = (
                "stopping training"
                if self.on_budget == "stop"
                else ("continuing (model.privacy.on_budget=warn) and overspending")
            )
            log.warning("%s: %s.", message, action)
            self._warned = True
        return self.on_budget == "stop"

    def state_dict(self) -> dict:
        return {
            "history": [tuple(h) for h in self.accountant.history],
            "epsilon": self.epsilon(),
            "delta": self.delta,
            "noise_multiplier": self.noise_multiplier,
            "max_grad_norm": self.max_grad_norm,
        }

    def load_state_dict(self, state: dict) -> None:
        self.accountant.history = [tuple(h) for h in state["history"]]
        if self.noise_multiplier is None:  # chosen by the run that wrote the checkpoint
            self.noise_multiplier = state["noise_multiplier"]

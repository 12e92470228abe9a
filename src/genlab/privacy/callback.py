"""Differentially private training (DP-SGD, Abadi et al., 2016) with Opacus, as one callback.

    python train.py experiment=dp_gan_mnist                     # (epsilon, delta) = (10, 1e-5)
    python train.py model=vae privacy.enabled=true privacy.target_epsilon=1

Models take no part in it beyond saying which nets see real images (``private_nets()``, see
docs/models.md) and refusing their own settings DP-SGD cannot honour
(``check_private_training()``). Everything else is here: reshaping those nets, the private
optimizer, the per-sample hooks, the accountant, the budget stop, ``train/epsilon`` and the
checkpoint state.

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
D's loss, and removing a real image changes exactly one clipped per-sample gradient. Per-sample
gradients are recorded only in backward passes that train a private net: the generator's step
also runs through D (with D frozen by ``toggle_optimizer``) and records nothing.
BatchNorm layers of private nets (they mix images of a batch) become GroupNorm; layers Opacus
cannot handle, double backward (gradient penalty, R1) and spectral norm are refused.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import nn

from genlab.errors import ConfigError

log = logging.getLogger(__name__)

ON_BUDGET = ("stop", "warn")


class DifferentialPrivacy(Callback):
    """The ``privacy`` settings and, once training starts, the DP-SGD machinery."""

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
            raise ConfigError(f"privacy.on_budget={on_budget!r}: choose one of {ON_BUDGET}.")
        if enabled:
            if noise_multiplier is None and target_epsilon is None:
                raise ConfigError(
                    "privacy.noise_multiplier=null picks the noise for a target budget: "
                    "set privacy.target_epsilon too (e.g. 10), or give the noise."
                )
            if noise_multiplier is not None and noise_multiplier <= 0:
                raise ConfigError(
                    f"privacy.noise_multiplier={noise_multiplier} must be > 0: without "
                    "noise clipping alone gives no privacy guarantee."
                )
            if max_grad_norm <= 0:
                raise ConfigError(f"privacy.max_grad_norm={max_grad_norm} must be > 0.")
            if target_epsilon is not None and target_epsilon <= 0:
                raise ConfigError(f"privacy.target_epsilon={target_epsilon} must be > 0.")
            if not 0 < delta < 1:
                raise ConfigError(f"privacy.delta={delta} must be in (0, 1), e.g. 1e-5.")
        self.enabled = enabled
        self.noise_multiplier, self.max_grad_norm = noise_multiplier, max_grad_norm
        self.target_epsilon, self.delta, self.on_budget = target_epsilon, delta, on_budget
        self.sample_rate: float | None = None
        self.max_steps: int | None = None  # private steps the target budget allows
        # (net, its Opacus GradSampleModule): the hooks are kept out of the module tree, so
        # checkpoint keys do not change.
        self._hooks: list = []
        self._optimizer = None  # the DPOptimizer made by private_optimizer()
        self._accountant = None
        self._warned = False
        self._prepared: set[int] = set()  # ids of the models whose nets are made private

    # --- the model ----------------------------------------------------------------------------
    @staticmethod
    def private_nets(model: nn.Module) -> dict[str, nn.Module]:
        """The model's nets that see real images (attribute name -> net)."""
        declared = getattr(model, "private_nets", None)
        if declared is None:
            raise ConfigError(
                f"privacy.enabled=true: {type(model).__name__} does not declare which nets see "
                "real images (private_nets(), docs/models.md), so DP-SGD cannot train it. Set "
                "privacy.enabled=false, or add private_nets() to the model."
            )
        return declared()

    def prepare(self, model: nn.Module) -> None:
        """Refuse the model's settings DP-SGD cannot honour and reshape its private nets
        (``make_private``). Before any weights are loaded: the reshaped nets have other keys."""
        if id(model) in self._prepared:
            return
        check = getattr(model, "check_private_training", None)
        if check is not None:
            check()
        for name, net in self.private_nets(model).items():
            setattr(model, name, self.make_private(net, name))
        self._prepared.add(id(model))

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
                f"privacy.enabled=true: the {role}'s layers {', '.join(parametrized)} have "
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
                f"privacy.enabled=true: the {role} has layers DP-SGD cannot train: "
                + "; ".join(str(e) for e in errors)
                + f". Use a {role} without them (e.g. norm: layer) or disable privacy."
            )
        return net

    # --- Lightning hooks: the whole lifecycle -------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.prepare(pl_module)  # train.py did it already, before any data was loaded

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size > 1 or "16" in str(trainer.precision):
            raise ConfigError(
                "privacy.enabled=true runs on one device in 32-bit or bf16 precision "
                f"(this trainer: {trainer.world_size} processes, precision {trainer.precision}):"
                " the per-sample clipping does not see DDP's or the fp16 scaler's gradients."
            )
        # The optimizers of the private nets become DP optimizers (before Lightning restores
        # their state from a checkpoint, which they pass through to the optimizers they wrap).
        private = {p for net in self.private_nets(pl_module).values() for p in net.parameters()}
        optimizers = []
        for optimizer in trainer.optimizers:
            params = {p for group in optimizer.param_groups for p in group["params"]}
            if params & private:
                if params - private:
                    raise ConfigError(
                        f"privacy.enabled=true: an optimizer of {type(pl_module).__name__} "
                        "trains private and non-private parameters together; give the private "
                        "nets (private_nets()) an optimizer of their own."
                    )
                if self._optimizer is not None:  # one accountant, one noise: one optimizer
                    raise ConfigError(
                        f"privacy.enabled=true: {type(pl_module).__name__} steps its private "
                        "nets with several optimizers; DP-SGD here needs them under one."
                    )
                optimizer = self.private_optimizer(optimizer)
            optimizers.append(optimizer)
        trainer.optimizers = optimizers

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        max_epochs = trainer.max_epochs
        if self.noise_multiplier is None and (max_epochs is None or max_epochs < 1):
            raise ConfigError(
                "privacy.noise_multiplier=null spreads target_epsilon over "
                "trainer.max_epochs: set trainer.max_epochs (or give the noise)."
            )
        self.start(
            self.private_nets(pl_module),
            trainer.train_dataloader,
            max_epochs or 0,
            trainer.num_training_batches,  # limit_train_batches included
        )

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.budget_reached() and self.over_budget_action():
            # The model's on_train_batch_start (GenerativeModel) then ends the epoch before
            # this batch: no private step beyond the budget.
            trainer.should_stop = True

    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor
    ) -> None:
        # Record per-sample gradients only in passes that train a private net: the generator's
        # step runs through D too, with D frozen, and must neither record nor fail.
        for net, hooks in self._hooks:
            if any(p.requires_grad for p in net.parameters()):
                hooks.enable_hooks()
            else:
                hooks.disable_hooks()

    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for _, hooks in self._hooks:  # forward passes record again (frozen nets are skipped)
            hooks.enable_hooks()

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any
    ) -> None:
        if optimizer is self._optimizer:
            self.check_per_sample(optimizer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.log("train/epsilon", self.epsilon())

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stop()

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint["privacy"] = self.budget_state()  # the budget spent travels with the weights

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if "privacy" in checkpoint:
            self.load_budget_state(checkpoint["privacy"])

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
                "privacy.enabled=true needs Poisson sampling for its privacy accounting: "
                "set data.poisson_sampling=true (the default follows privacy.enabled; "
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
        self._hooks = [(net, GradSampleModule(net)) for net in nets.values()]

    def stop(self) -> None:
        """Remove the per-sample hooks (end of fit)."""
        for _, hooks in self._hooks:
            hooks.to_standard_module()  # hooks and stored per-sample gradients removed
        self._hooks = []

    @staticmethod
    def check_per_sample(optimizer: torch.optim.Optimizer) -> None:
        """Refuse to step without per-sample gradients: Opacus' optimizer would then take a
        plain, non-private step."""
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.requires_grad and getattr(p, "grad_sample", None) is None:
                    raise RuntimeError(
                        "privacy: a private parameter has no per-sample gradient; refusing a "
                        "non-private step (were the per-sample hooks removed, or the net frozen in its forward pass?)"
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
                else ("continuing (privacy.on_budget=warn) and overspending")
            )
            log.warning("%s: %s.", message, action)
            self._warned = True
        return self.on_budget == "stop"

    def budget_state(self) -> dict:
        return {
            "history": [tuple(h) for h in self.accountant.history],
            "epsilon": self.epsilon(),
            "delta": self.delta,
            "noise_multiplier": self.noise_multiplier,
            "max_grad_norm": self.max_grad_norm,
        }

    def load_budget_state(self, state: dict) -> None:
        self.accountant.history = [tuple(h) for h in state["history"]]
        if self.noise_multiplier is None:  # chosen by the run that wrote the checkpoint
            self.noise_multiplier = state["noise_multiplier"]

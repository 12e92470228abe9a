"""Differentially private training (DP-SGD, Abadi et al., 2016) with Opacus: the ``privacy``
config group, as one Lightning callback that wires the pieces of this package together.

    python train.py experiment=dp_gan_mnist                     # (epsilon, delta) = (10, 1e-5)
    python train.py model=vae privacy.enabled=true privacy.target_epsilon=1

Models take no part in it beyond saying which nets see real images (``private_nets()``, see
docs/models.md) and refusing their own settings DP-SGD cannot honour
(``check_private_training()``). Only those nets are private: the discriminator of a GAN (the
generator learns from D alone, so it inherits D's guarantee as post-processing), the encoder
and decoder of a VAE. The pieces, one file each:

- ``nets.py``: rebuilding the private nets (``prepare``, before any weights are loaded) and
  the per-sample gradient hooks during fit;
- ``optimizer.py``: the DP optimizer that replaces the private nets' optimizer: per-sample
  clipping plus noise, and no step beyond the budget, whatever the model does;
- ``accountant.py``: the epsilon spent by the steps taken (RDP, Mironov 2017);
- ``budget.py``: the steps ``target_epsilon`` allows, ``on_budget`` and the checkpoint entry.

Batches are drawn by Poisson sampling (``data.poisson_sampling``, on by default with privacy).
``train/epsilon`` is logged every epoch. A GAN's D step pairs real image i with fake image i:
one "sample" is the sum of both terms of D's loss, and removing a real image changes exactly
one clipped per-sample gradient.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import Callback
from torch import nn

from genlab.checkpoints.keys import PRIVACY_KEY
from genlab.config.rules import POSITIVE, Range, Rule
from genlab.config.validation import check_types
from genlab.errors import ConfigError
from genlab.privacy import nets
from genlab.privacy.budget import ON_BUDGET, Budget

if TYPE_CHECKING:
    from genlab.privacy.optimizer import DPOptimizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Why:
    """``rule`` with the reason for it, said when a value breaks it."""

    rule: Rule
    why: str

    def violation(self, value: Any) -> str | None:
        problem = self.rule.violation(value)
        return None if problem is None else f"{problem} ({self.why})"

    def describe(self) -> str:
        return self.rule.describe()


NOISE = _Why(POSITIVE, "without noise, clipping alone gives no privacy guarantee")
DELTA = _Why(Range(gt=0, lt=1), "below 1/N for N training images, e.g. 1e-5")


class DifferentialPrivacy(Callback):
    """The ``privacy`` settings and, once training starts, the DP-SGD machinery."""

    def __init__(
        self,
        enabled: bool = False,
        noise_multiplier: Annotated[float | None, NOISE] = 1.0,
        max_grad_norm: Annotated[float, POSITIVE] = 1.0,
        target_epsilon: Annotated[float | None, POSITIVE] = None,
        delta: Annotated[float, DELTA] = 1e-5,
        on_budget: Annotated[str, ON_BUDGET] = "stop",
    ) -> None:
        # Each value is judged by the rules in the hints above, with the check that start-up
        # and the trust check of a stored config run (check_types); here too, so that every
        # way of building an enabled one (train, a DP checkpoint's config, Python) is covered:
        # a noise of 0 would train without privacy. What depends on two values follows.
        if enabled:
            values = {
                "_target_": f"{type(self).__module__}.{type(self).__qualname__}",
                "noise_multiplier": noise_multiplier,
                "max_grad_norm": max_grad_norm,
                "target_epsilon": target_epsilon,
                "delta": delta,
                "on_budget": on_budget,
            }
            check_types(OmegaConf.create(values), "privacy")
        if enabled and noise_multiplier is None and target_epsilon is None:
            raise ConfigError(
                "privacy.noise_multiplier=null picks the noise for a target budget: "
                "set privacy.target_epsilon too (e.g. 10), or give the noise."
            )
        self.enabled = enabled
        self.noise_multiplier, self.max_grad_norm = noise_multiplier, max_grad_norm
        self.budget = Budget(target_epsilon, delta, on_budget)
        self.optimizer: DPOptimizer | None = None  # made by private_optimizer()
        self.hooks: nets.PerSampleHooks | None = None  # attached by start(), removed by stop()
        self._prepared: set[int] = set()  # ids of the models whose nets are made private

    # --- the model, before any data or weights are loaded -------------------------------------
    def prepare(self, model: nn.Module) -> None:
        """Refuse the model's settings DP-SGD cannot honour and rebuild its private nets
        (``nets.rebuild``). The one entry point for train, resume and loading a DP checkpoint:
        the rebuilt nets have other keys, so it comes before any weights are loaded."""
        if id(model) not in self._prepared:
            nets.rebuild(model)
            self._prepared.add(id(model))

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
        # The optimizer of the private nets becomes the DP optimizer (before Lightning restores
        # its state from a checkpoint, which passes through to the optimizer it wraps).
        private = {p for net in nets.private_nets(pl_module).values() for p in net.parameters()}
        from genlab.privacy.optimizer import wrap_private

        trainer.optimizers = wrap_private(
            trainer.optimizers,
            private,
            type(pl_module).__name__,
            lambda optimizer: self.private_optimizer(optimizer, trainer),
        )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        max_epochs = trainer.max_epochs
        if self.noise_multiplier is None and (max_epochs is None or max_epochs < 1):
            raise ConfigError(
                "privacy.noise_multiplier=null spreads target_epsilon over "
                "trainer.max_epochs: set trainer.max_epochs (or give the noise)."
            )
        self.start(
            nets.private_nets(pl_module),
            trainer.train_dataloader,
            max_epochs or 0,
            trainer.num_training_batches,  # limit_train_batches included
        )

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # Stop before a batch whose private step the budget cannot pay: the framework's
        # StopBeforeBatch ends the epoch here, for any model train.py runs; where it is not
        # installed (a hand-built Trainer), the DP optimizer still refuses the private step.
        if self.budget.reached() and self.budget.over_budget_action():
            trainer.should_stop = True

    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor
    ) -> None:
        if self.hooks is not None:
            self.hooks.record_trainable_only()

    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.hooks is not None:
            self.hooks.record_all()

    @staticmethod
    def logged_metrics(config: Mapping[str, Any]) -> tuple[str, ...]:
        """The keys this callback logs (``config``: its node), which model.monitor may name."""
        return ("train/epsilon",)  # every epoch, below

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.log("train/epsilon", self.epsilon())

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stop()

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # The budget spent travels with the weights.
        checkpoint[PRIVACY_KEY] = self.budget.state(self.noise_multiplier, self.max_grad_norm)

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if PRIVACY_KEY in checkpoint:
            noise = self.budget.load_state(checkpoint[PRIVACY_KEY])
            if self.noise_multiplier is None:  # chosen by the run that wrote the checkpoint
                self.noise_multiplier = noise

    # --- training -----------------------------------------------------------------------------
    def private_optimizer(
        self, optimizer: torch.optim.Optimizer, trainer: pl.Trainer | None = None
    ) -> DPOptimizer:
        """Wrap the optimizer of the private nets (noise and batch size are settled in
        ``start``); at the budget it refuses to step and stops ``trainer``."""
        from genlab.privacy.optimizer import DPOptimizer

        def stop_training() -> None:
            if trainer is not None:
                trainer.should_stop = True

        self.optimizer = DPOptimizer(
            optimizer,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.max_grad_norm,
            budget=self.budget,
            on_stop=stop_training,
        )
        return self.optimizer

    def start(
        self,
        private: Mapping[str, nn.Module],
        loader: object,
        max_epochs: int,
        steps_per_epoch: int,
    ) -> None:
        """At the start of fit: read the loader's sample rate, settle the noise and the step
        budget, attach the per-sample hooks."""
        sample_rate = getattr(loader, "sample_rate", None)
        if not sample_rate:
            raise ConfigError(
                "privacy.enabled=true needs Poisson sampling for its privacy accounting: "
                "set data.poisson_sampling=true (the default follows privacy.enabled; "
                "data.on_device and DDP do not support it)."
            )
        budget = self.budget
        train_size = len(loader.dataset)  # type: ignore[attr-defined]
        if budget.delta >= 1 / train_size:
            log.warning(
                "privacy: delta=%g is not below 1/N = %g (N = %d training images): a "
                "mechanism that publishes one image at random would meet it. Use delta < 1/N.",
                budget.delta, 1 / train_size, train_size,
            )  # fmt: skip
        if self.noise_multiplier is None:
            from genlab.privacy.accountant import noise_for

            assert budget.target_epsilon is not None  # the constructor demands one
            self.noise_multiplier = noise_for(
                budget.target_epsilon, budget.delta, sample_rate, max_epochs * steps_per_epoch
            )
            log.info(
                "privacy: noise_multiplier %.4f spends epsilon %g in %d epochs",
                self.noise_multiplier, budget.target_epsilon, max_epochs,
            )  # fmt: skip
        if self.optimizer is None:
            raise ConfigError(
                "privacy.enabled=true: no optimizer trains the private nets (private_nets()); "
                "configure_optimizers must return one for them."
            )
        self.optimizer.settle(
            self.noise_multiplier,
            sample_rate,
            loader.expected_batch_size,  # type: ignore[attr-defined]
        )
        budget.settle(self.noise_multiplier, sample_rate)
        self.hooks = nets.PerSampleHooks(private)

    def stop(self) -> None:
        """Remove the per-sample hooks (end of fit)."""
        if self.hooks is not None:
            self.hooks.remove()
            self.hooks = None

    def epsilon(self) -> float:
        """The epsilon spent so far at ``delta`` (0 before the first private step)."""
        return self.budget.epsilon()

"""GAN LightningModule with manual optimisation (DCGAN by default).

    python train.py model=gan                       # DCGAN on MNIST, non-saturating loss
    python train.py experiment=dcgan_mnist          # the tuned recipe

The whole update is in ``training_step``: one discriminator step per batch, one generator step
every ``n_critic`` batches. Images arrive in [0, 1]; the tanh generator works in [-1, 1], so the
module converts at its boundary.
"""

from __future__ import annotations

import torch
from torch import nn

from genlab.errors import ConfigError
from genlab.models.base import GenerativeModel, OptimizerFactory, SchedulerFactory
from genlab.models.losses import GAN_LOSSES


class GAN(GenerativeModel):
    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        optimizer: OptimizerFactory,
        d_optimizer: OptimizerFactory | None = None,
        latent_dim: int = 64,
        loss: str = "nonsaturating",
        n_critic: int = 1,
        scheduler: SchedulerFactory | None = None,
        gradient_clip_val: float | None = None,
        monitor: str = "val/fid",
        monitor_mode: str = "min",
    ) -> None:
        super().__init__(latent_dim, monitor, monitor_mode, scheduler, gradient_clip_val)
        if loss not in GAN_LOSSES:
            raise ConfigError(
                f"model.loss={loss!r} is unknown: choose one of {sorted(GAN_LOSSES)}."
            )
        if n_critic < 1:
            raise ConfigError(f"model.n_critic={n_critic} must be >= 1.")
        self.generator = generator
        self.discriminator = discriminator
        self.optimizer_factory = optimizer
        self.d_optimizer_factory = d_optimizer or optimizer
        self.d_loss_fn, self.g_loss_fn = GAN_LOSSES[loss]
        self.n_critic = n_critic

    def configure_optimizers(self):
        opt_g = self.optimizer_factory(self.generator.parameters())
        opt_d = self.d_optimizer_factory(self.discriminator.parameters())
        return self._with_schedulers([opt_g, opt_d])

    # --- sampling -----------------------------------------------------------------------------
    def generate(self, z: torch.Tensor) -> torch.Tensor:
        return (self.generator(z) + 1) / 2  # tanh's [-1, 1] -> [0, 1]

    # --- training -----------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        real = batch[0] * 2 - 1  # [0, 1] -> the generator's [-1, 1]
        g_step = (batch_idx + 1) % self.n_critic == 0
        # Drawn before the D step, while G's parameters still require grad, so the G step can
        # reuse it. On D-only batches (n_critic > 1) no graph through G is needed.
        with torch.set_grad_enabled(g_step):
            fake = self.generator(self.noise(real.shape[0]))

        # Discriminator: real -> 1, fake -> 0. fake is detached: this step must not reach G.
        self.toggle_optimizer(opt_d)
        real_logits = self.discriminator(real)
        fake_logits = self.discriminator(fake.detach())
        d_loss = self.d_loss_fn(real_logits, fake_logits)
        self.backward_and_step(d_loss, opt_d, "train/d_loss")
        self.untoggle_optimizer(opt_d)
        self._log_discriminator("train", d_loss, real_logits, fake_logits)

        # Generator: every n_critic batches, through the freshly updated discriminator.
        if g_step:
            self.toggle_optimizer(opt_g)
            g_loss = self.g_loss_fn(self.discriminator(fake))
            self.backward_and_step(g_loss, opt_g, "train/g_loss")
            self.untoggle_optimizer(opt_g)
            # on_epoch too: with n_critic > 1 the per-step value is logged only every few batches
            self.log("train/g_loss", g_loss, prog_bar=True, on_epoch=True)

    def _log_discriminator(self, stage, d_loss, real_logits, fake_logits) -> None:
        # Training: per-step values. Validation/test: epoch means, averaged over DDP ranks.
        opts = {"on_epoch": stage != "train", "sync_dist": stage != "train"}
        d_real, d_fake = torch.sigmoid(real_logits.detach()), torch.sigmoid(fake_logits.detach())
        self.log(f"{stage}/d_loss", d_loss, prog_bar=stage == "train", **opts)
        self.log(f"{stage}/d_real", d_real.mean(), **opts)  # mean D(x)
        self.log(f"{stage}/d_fake", d_fake.mean(), **opts)  # mean D(G(z))
        self.log(f"{stage}/d_real_acc", (d_real > 0.5).float().mean(), **opts)
        self.log(f"{stage}/d_fake_acc", (d_fake < 0.5).float().mean(), **opts)

    # --- validation / test --------------------------------------------------------------------
    def _evaluate(self, batch, batch_idx: int, stage: str) -> None:
        real = batch[0]
        # Latents seeded by batch index: every epoch is judged on the same z (less noise when
        # picking the best checkpoint) and validation leaves the training RNG untouched.
        fake = self.sample(real.shape[0], generator=torch.Generator().manual_seed(batch_idx))
        real_logits = self.discriminator(real * 2 - 1)
        fake_logits = self.discriminator(fake * 2 - 1)
        d_loss = self.d_loss_fn(real_logits, fake_logits)
        self._log_discriminator(stage, d_loss, real_logits, fake_logits)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")

"""GAN LightningModule with manual optimisation (DCGAN by default).

    python train.py model=gan                       # DCGAN on MNIST, non-saturating loss
    python train.py model=wgan_gp                   # Wasserstein loss + gradient penalty
    python train.py model=hinge_gan                 # hinge loss, spectral norm, EMA generator
    python train.py experiment=dcgan_mnist          # the tuned recipe

The whole update is in ``training_step``: one discriminator step per batch, one generator step
every ``n_critic`` batches. Images arrive in [0, 1]; the tanh generator works in [-1, 1], so the
module converts at its boundary. Stabilisers, each one switch: ``loss``, ``gradient_penalty``
(WGAN-GP weight), ``r1_gamma`` / ``r1_every`` (lazy R1), ``spectral_norm`` (on every conv and
linear layer of D), ``label_smoothing`` (one-sided, non-saturating loss only), ``ema_decay``
(an exponential moving average of G's weights, used by ``generate``/``sample`` and saved in
checkpoints), ``diffaugment`` (augment D's real and fake inputs), separate G/D learning rates
(``d_optimizer``, TTUR), ``top_k`` (G learns from the fakes D rates best), ``gradient_clip_val``,
``scheduler``. ``privacy.enabled=true`` trains D with DP-SGD (``genlab.privacy.callback``; G is
private as post-processing of D).
"""

from __future__ import annotations

from typing import Annotated, Any

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as add_spectral_norm

from genlab.config.rules import AT_LEAST_ONE, DECAY, NON_NEGATIVE, Range
from genlab.errors import ConfigError
from genlab.models.base import GenerativeModel, OptimizerFactory, refused_with_privacy
from genlab.models.diffaugment import check_policy, diff_augment
from genlab.models.ema import ema_copy, ema_update
from genlab.models.losses import GAN_LOSSES
from genlab.models.penalties import gradient_penalty, r1_penalty
from genlab.nets.conv import MinibatchStd


class GAN(GenerativeModel):
    monitor = "val/fid"  # logged by callbacks.fid
    monitor_mode = "min"
    model_metrics = ("d_acc",)  # discriminator accuracy on held-out real vs fake images

    def __init__(
        self,
        *,
        generator: nn.Module,
        discriminator: nn.Module,
        optimizer: OptimizerFactory,
        d_optimizer: OptimizerFactory | None = None,
        loss: str = "non_saturating",
        n_critic: Annotated[int, AT_LEAST_ONE] = 1,
        gradient_penalty: Annotated[float, NON_NEGATIVE] = 0.0,
        r1_gamma: Annotated[float, NON_NEGATIVE] = 0.0,
        r1_every: Annotated[int, AT_LEAST_ONE] = 16,
        spectral_norm: bool = False,
        label_smoothing: Annotated[float, Range(ge=0, lt=1)] = 0.0,
        ema_decay: Annotated[float, DECAY] | None = None,
        diffaugment: list[str] | tuple[str, ...] = (),
        top_k: Annotated[float, Range(gt=0, le=1)] = 1.0,
        top_k_decay: Annotated[float, Range(gt=0, le=1)] = 0.99,
        **base: Any,  # latent_dim, monitor, scheduler, ...: see GenerativeModel
    ) -> None:
        super().__init__(**base)
        if loss not in GAN_LOSSES:
            raise ConfigError(
                f"model.loss={loss!r} is unknown: choose one of {sorted(GAN_LOSSES)}."
            )
        if label_smoothing and GAN_LOSSES[loss][0] is not GAN_LOSSES["non_saturating"][0]:
            raise ConfigError(f"model.label_smoothing works with loss=non_saturating, not {loss}.")
        if spectral_norm:
            for module in list(discriminator.modules()):
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    add_spectral_norm(module)
        self.check_label_nets(generator=generator, discriminator=discriminator)
        self.generator = generator
        self.discriminator = discriminator
        # A frozen copy whose weights trail G's: smoother samples, the one sample()/eval use.
        self.generator_ema = ema_copy(generator) if ema_decay is not None else None
        self.ema_decay = ema_decay
        if ema_decay is not None:  # in the checkpoint, so a resumed run keeps its warm-up
            self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        self.optimizer_factory = optimizer
        self.d_optimizer_factory = d_optimizer or optimizer
        self.d_loss_fn, self.g_loss_fn = GAN_LOSSES[loss]
        self.d_loss_kwargs = {"label_smoothing": label_smoothing} if label_smoothing else {}
        self.n_critic = n_critic
        self.gp_weight, self.r1_gamma, self.r1_every = gradient_penalty, r1_gamma, r1_every
        self.spectral_norm = spectral_norm
        self.diffaugment = check_policy(diffaugment)
        self.top_k, self.top_k_decay = top_k, top_k_decay

    @property
    def logged_metrics(self) -> tuple[str, ...]:
        """What training and validation log (``val/fid`` comes from callbacks.fid)."""
        d_stats = ("d_loss", "d_real", "d_fake", "d_real_acc", "d_fake_acc")
        penalties = (["train/gradient_penalty"] if self.gp_weight else []) + (
            ["train/r1_penalty"] if self.r1_gamma else []
        )
        return (
            "train/g_loss",
            *(f"{stage}/{name}" for stage in ("train", "val") for name in d_stats),
            *penalties,
        )

    def configure_optimizers(self):
        opt_g = self.optimizer_factory(self.generator.parameters())
        opt_d = self.d_optimizer_factory(self.discriminator.parameters())
        return self._with_schedulers([opt_g, opt_d])

    def compilable(self, net: nn.Module) -> bool:
        # R1 and the gradient penalty backpropagate through D's input gradient: D stays eager.
        return not (net is self.discriminator and (self.gp_weight or self.r1_gamma))

    def private_nets(self) -> dict[str, nn.Module]:
        return {"discriminator": self.discriminator}  # the only net that sees real images

    def check_private_training(self) -> None:
        super().check_private_training()
        # Penalties need a double backward and spectral norm a weight parametrisation;
        # Opacus' per-sample gradients support neither.
        for name, value in (
            ("gradient_penalty", self.gp_weight),
            ("r1_gamma", self.r1_gamma),
            ("spectral_norm", self.spectral_norm),
        ):
            if value:
                shown, off = ("true", "false") if isinstance(value, bool) else (value, 0)
                raise refused_with_privacy(name, shown, f"set model.{name}={off}.")
        if any(isinstance(m, MinibatchStd) for m in self.discriminator.modules()):
            # Its statistic mixes the examples of a batch: no gradient is per-sample any more.
            raise refused_with_privacy(
                "discriminator.minibatch_std",
                "true",
                "set model.discriminator.minibatch_std=false.",
            )

    # --- sampling -----------------------------------------------------------------------------
    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        generator = self.generator_ema if self.generator_ema is not None else self.generator
        return (self.conditioned(generator, z, labels) + 1) / 2  # tanh's [-1, 1] -> [0, 1]

    def update_ema(self) -> None:
        """One step of G's moving average (``genlab.models.ema``)."""
        ema_update(self.generator_ema, self.generator, self.ema_updates, self.ema_decay)

    def d_input(self, images: torch.Tensor) -> torch.Tensor:
        """What D sees: images in [-1, 1], DiffAugment-ed when enabled (real and fake alike)."""
        return diff_augment(images, self.diffaugment) if self.diffaugment else images

    # --- training -----------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        real = batch[0] * 2 - 1  # [0, 1] -> the generator's [-1, 1]
        # A conditional GAN draws its fakes for the real batch's classes: D compares like with
        # like, and the classes are as frequent as in the data.
        labels = self.batch_labels(batch)
        g_step = (batch_idx + 1) % self.n_critic == 0
        log = self.logging_step(batch_idx)
        # Drawn before the D step, while G's parameters still require grad, so the G step can
        # reuse it. On D-only batches (n_critic > 1) no graph through G is needed.
        with torch.set_grad_enabled(g_step):
            fake = self.conditioned(self.generator, self.noise(real.shape[0]), labels)

        # Discriminator: real -> 1, fake -> 0. fake is detached: this step must not reach G.
        self.toggle_optimizer(opt_d)
        self._discriminator_step(opt_d, real, fake, labels, batch_idx, log)
        self.untoggle_optimizer(opt_d)

        # Generator: every n_critic batches, through the freshly updated discriminator.
        if g_step:
            self.toggle_optimizer(opt_g)
            fake_logits = self.conditioned(self.discriminator, self.d_input(fake), labels)
            g_loss = self.g_loss_fn(self.best_fakes(fake_logits))
            self.backward_and_step(g_loss, opt_g, "train/g_loss")
            self.untoggle_optimizer(opt_g)
            if self.generator_ema is not None:
                self.update_ema()
            # Every G step: with n_critic > 1 a logging step may be a D-only batch, so this one
            # cannot wait for logging_step. Per step only: an epoch mean accumulated inside
            # Lightning would not survive a mid-epoch resume.
            self.log("train/g_loss", g_loss, prog_bar=True)

    def best_fakes(self, fake_logits: torch.Tensor) -> torch.Tensor:
        """Top-k training (Sinha et al., 2020): the generator step uses only the fakes D rates
        most real. The kept fraction starts at 1 and shrinks by ``top_k_decay`` each epoch down
        to ``top_k``: early on every sample teaches G; later the worst ones, whose gradients
        point away from the data, are left out."""
        keep = max(self.top_k, self.top_k_decay**self.current_epoch)
        if keep >= 1:
            return fake_logits
        k = max(1, round(keep * fake_logits.shape[0]))
        return fake_logits.flatten().topk(k).values

    def _discriminator_step(self, opt_d, real, fake, labels, batch_idx: int, log: bool) -> None:
        real_in, fake_in = self.d_input(real), self.d_input(fake.detach())

        def discriminator(x: torch.Tensor) -> torch.Tensor:  # D on this batch's classes
            return self.conditioned(self.discriminator, x, labels)

        real_logits = discriminator(real_in)
        fake_logits = discriminator(fake_in)
        d_loss = self.d_loss_fn(real_logits, fake_logits, **self.d_loss_kwargs)
        if log:
            self._log_discriminator("train", d_loss, real_logits, fake_logits)
        if self.gp_weight:
            gp = gradient_penalty(discriminator, real_in, fake_in, self.gp_weight)
            if log:
                self.log("train/gradient_penalty", gp)
            d_loss = d_loss + gp
        if self.r1_gamma and batch_idx % self.r1_every == 0:
            # Lazy regularisation: every r1_every batches, scaled up to keep its average weight.
            r1 = r1_penalty(discriminator, real_in, self.r1_gamma)
            self.log_latest("train/r1_penalty", r1)  # computed on some batches only
            d_loss = d_loss + r1 * self.r1_every
        self.backward_and_step(d_loss, opt_d, "train/d_loss")

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
        real, labels = batch[0], self.batch_labels(batch)
        # Latents seeded by batch index: every epoch is judged on the same z (less noise when
        # picking the best checkpoint) and validation leaves the training RNG untouched.
        seeded = torch.Generator().manual_seed(batch_idx)
        fake = self.sample(real.shape[0], generator=seeded, labels=labels)
        real_logits = self.conditioned(self.discriminator, real * 2 - 1, labels)
        fake_logits = self.conditioned(self.discriminator, fake * 2 - 1, labels)
        d_loss = self.d_loss_fn(real_logits, fake_logits)
        self._log_discriminator(stage, d_loss, real_logits, fake_logits)

    def validation_step(self, batch, batch_idx: int) -> None:
        with self.evaluation_rng(batch_idx):
            self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        with self.evaluation_rng(batch_idx):
            self._evaluate(batch, batch_idx, "test")

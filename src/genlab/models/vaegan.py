"""VAE-GAN (Larsen et al., 2016): a VAE whose reconstruction error is measured in the feature
space of a GAN discriminator, trained with three optimizers stepped by the module.

    python train.py model=vaegan

Per batch, with x real, x_rec = Dec(z ~ q(z|x)) and x_p = Dec(z ~ N(0, I)):
- discriminator: non-saturating GAN loss, real x against both x_rec and x_p (fakes);
- encoder: ``beta * KL(q(z|x) || p(z)) + L_feat``;
- decoder: ``gamma * L_feat + L_adv`` (fool D with x_rec and x_p);
where ``L_feat = 0.5 * ||D_l(x) - D_l(x_rec)||^2`` per image (a unit-variance Gaussian in the
features ``D_l`` before D's last layer, summed over them) and ``gamma`` trades reconstruction
fidelity against realism in the decoder (Larsen et al.'s weighting of content vs style).
Images are [0, 1] at the boundary; the tanh decoder and D work in [-1, 1].

What the default GAN learned is available, each one switch, off in conf/model/vaegan.yaml:
``r1_gamma``/``r1_every`` (lazy R1 on D's real images), ``ema_decay`` (samples and
reconstructions from a moving average of the decoder) and ``adversarial_reconstructions=false``
(D and the decoder's adversarial loss on prior samples only, as in the GAN). ``pixel_weight`` adds
``0.5 * ||x - x_rec||^2`` per image to the encoder's and decoder's losses: the feature loss
alone keeps strokes sharp but lets them drift by a pixel, which SSIM counts as blur.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from genlab.config.rules import AT_LEAST_ONE, DECAY, NON_NEGATIVE
from genlab.errors import ConfigError
from genlab.models.base import GenerativeModel, OptimizerFactory
from genlab.models.ema import ema_copy, ema_update
from genlab.models.losses import gaussian_kl, nonsaturating_d_loss, nonsaturating_g_loss
from genlab.models.penalties import r1_penalty
from genlab.models.vae import split_posterior

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@contextmanager
def running_stats_frozen(net: nn.Module) -> Iterator[None]:
    """Batch norm inside uses the batch's statistics but leaves its running ones alone.

    The decoder runs twice per batch, on posterior and on prior codes; samples are drawn in eval
    mode from the running statistics, so only the prior pass may move them (momentum 0 keeps
    them; ``num_batches_tracked`` is unused when a momentum is set)."""
    norms = [m for m in net.modules() if isinstance(m, BATCH_NORMS)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum


class VAEGAN(GenerativeModel):
    """No ``private_nets``: its decoder learns from real images through the feature loss and
    its KL mixes nothing, but the three coupled optimizers have no DP-SGD treatment here, so
    ``privacy.enabled=true`` is refused."""

    monitor = "val/fid"  # logged by callbacks.fid
    monitor_mode = "min"
    model_metrics = ("recon",)  # test_step: SSIM and PSNR of reconstructions (always logged)

    def __init__(
        self,
        *,
        encoder: nn.Module,
        decoder: nn.Module,
        discriminator: nn.Module,
        optimizer: OptimizerFactory,
        d_optimizer: OptimizerFactory | None = None,
        beta: Annotated[float, NON_NEGATIVE] = 1.0,
        gamma: Annotated[float, NON_NEGATIVE] = 1.0,
        pixel_weight: Annotated[float, NON_NEGATIVE] = 0.0,
        r1_gamma: Annotated[float, NON_NEGATIVE] = 0.0,
        r1_every: Annotated[int, AT_LEAST_ONE] = 16,
        ema_decay: Annotated[float, DECAY] | None = None,
        adversarial_reconstructions: bool = True,
        **base: Any,  # latent_dim, monitor, scheduler, ...: see GenerativeModel
    ) -> None:
        super().__init__(**base)
        if self.num_classes:
            raise ConfigError(
                f"model.num_classes={self.num_classes}: the VAE-GAN is unconditional; use "
                "model=cgan or model=cvae for class-conditional samples."
            )
        if not hasattr(discriminator, "features"):
            raise ConfigError(
                "model.discriminator must expose features(x) (genlab.nets.conv.ConvEncoder does)."
            )
        self.encoder, self.decoder, self.discriminator = encoder, decoder, discriminator
        self.optimizer_factory = optimizer
        self.d_optimizer_factory = d_optimizer or optimizer
        self.beta, self.gamma, self.pixel_weight = beta, gamma, pixel_weight
        self.r1_gamma, self.r1_every = r1_gamma, r1_every
        self.adversarial_reconstructions = adversarial_reconstructions
        self.decoder_ema = ema_copy(decoder) if ema_decay is not None else None
        self.ema_decay = ema_decay
        if ema_decay is not None:  # in the checkpoint, so a resumed run keeps its warm-up
            self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))

    @property
    def logged_metrics(self) -> tuple[str, ...]:
        """What training and validation log (``val/fid`` comes from callbacks.fid)."""
        train = ["train/d_loss", "train/kl", "train/feature_loss", "train/adversarial"]
        train += ["train/d_real_acc", "train/d_fake_acc"]
        train += ["train/pixel_loss"] if self.pixel_weight else []
        train += ["train/r1_penalty"] if self.r1_gamma else []
        val = ["val/kl", "val/feature_loss", "val/recon_mse", "val/d_real_acc"]
        return (*train, *val, "val/ssim", "val/psnr")

    def compilable(self, net: nn.Module) -> bool:
        return not (net is self.discriminator and self.r1_gamma)  # R1: a double backward

    def configure_optimizers(self):
        opt_e = self.optimizer_factory(self.encoder.parameters())
        opt_g = self.optimizer_factory(self.decoder.parameters())
        opt_d = self.d_optimizer_factory(self.discriminator.parameters())
        return self._with_schedulers([opt_e, opt_g, opt_d])

    # --- the VAE interface --------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images in [0, 1] -> posterior mean and log-variance."""
        return split_posterior(self.encoder(x * 2 - 1), self.latent_dim)

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        decoder = self.decoder_ema if self.decoder_ema is not None else self.decoder
        return (decoder(z) + 1) / 2

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.generate(self.encode(x)[0]).clamp(0, 1)

    # --- training -----------------------------------------------------------------------------
    def _forward(self, x01: torch.Tensor):
        mu, logvar = self.encode(x01)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        with running_stats_frozen(self.decoder):  # samples use the prior pass's statistics
            x_rec = self.decoder(z)
        x_prior = self.decoder(self.noise(len(x01)))
        return mu, logvar, x_rec, x_prior

    def _feature_loss(self, x: torch.Tensor, x_rec: torch.Tensor) -> torch.Tensor:
        target = self.discriminator.features(x).detach()
        return 0.5 * (self.discriminator.features(x_rec) - target).pow(2).flatten(1).sum(1).mean()

    def training_step(self, batch, batch_idx: int) -> None:
        opt_e, opt_g, opt_d = self.optimizers()
        x = batch[0] * 2 - 1
        mu, logvar, x_rec, x_prior = self._forward(batch[0])

        # 1. Discriminator: real against reconstructions and prior samples.
        self.toggle_optimizer(opt_d)
        # Larsen et al.'s D judges reconstructions too; without them D and the decoder's
        # adversarial loss see prior samples only, as in the GAN.
        judged = [x_rec, x_prior] if self.adversarial_reconstructions else [x_prior]
        fakes = torch.cat([x.detach() for x in judged])
        real_logits, fake_logits = self.discriminator(x), self.discriminator(fakes)
        d_loss = nonsaturating_d_loss(real_logits, fake_logits)
        if self.r1_gamma and batch_idx % self.r1_every == 0:
            # Lazy R1, as in the GAN: every r1_every batches, scaled up to its average weight.
            r1 = r1_penalty(self.discriminator, x, self.r1_gamma)
            self.log_latest("train/r1_penalty", r1)
            d_loss = d_loss + r1 * self.r1_every
        self.backward_and_step(d_loss, opt_d, "train/d_loss")
        self.untoggle_optimizer(opt_d)

        # 2 + 3. Encoder and decoder share one graph but minimise different losses: backprop
        # each loss, keep each network's own gradients, then step both.
        self.discriminator.requires_grad_(False)
        feature_loss = self._feature_loss(x, x_rec)
        kl = gaussian_kl(mu, logvar).mean()
        adversarial = nonsaturating_g_loss(self.discriminator(torch.cat(judged)))
        enc_loss = self.beta * kl + feature_loss
        dec_loss = self.gamma * feature_loss + adversarial
        if self.pixel_weight:
            pixel_loss = 0.5 * (x_rec - x).pow(2).flatten(1).sum(1).mean()
            enc_loss = enc_loss + self.pixel_weight * pixel_loss
            dec_loss = dec_loss + self.pixel_weight * pixel_loss
        self.check_finite(enc_loss, "train/enc_loss")
        self.check_finite(dec_loss, "train/dec_loss")
        opt_e.zero_grad(set_to_none=True)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(dec_loss, retain_graph=True)
        # Copies: the next backward adds into the same .grad tensors in place.
        dec_grads = [None if p.grad is None else p.grad.clone() for p in self.decoder.parameters()]
        self.encoder.zero_grad(set_to_none=True)  # dec_loss must not move the encoder
        self.manual_backward(enc_loss)
        for p, grad in zip(self.decoder.parameters(), dec_grads, strict=True):
            p.grad = grad  # enc_loss must not move the decoder
        opt_e.step()  # each step clips first (genlab.callbacks.framework.clipping)
        opt_g.step()
        self.discriminator.requires_grad_(True)
        if self.decoder_ema is not None:
            ema_update(self.decoder_ema, self.decoder, self.ema_updates, self.ema_decay)

        if not self.logging_step(batch_idx):
            return
        self.log_dict({"train/d_loss": d_loss, "train/kl": kl, "train/feature_loss": feature_loss,
                       "train/adversarial": adversarial}, prog_bar=False)  # fmt: skip
        self.log("train/d_real_acc", (real_logits > 0).float().mean())
        self.log("train/d_fake_acc", (fake_logits < 0).float().mean())
        if self.pixel_weight:
            self.log("train/pixel_loss", pixel_loss)

    # --- validation / test --------------------------------------------------------------------
    def _evaluate(self, batch, stage: str) -> None:
        x01 = batch[0]
        mu, logvar = self.encode(x01)
        recon = self.generate(mu).clamp(0, 1)
        opts = {"on_epoch": True, "sync_dist": True}
        self.log(f"{stage}/kl", gaussian_kl(mu, logvar).mean(), **opts)
        self.log(f"{stage}/feature_loss", self._feature_loss(x01 * 2 - 1, recon * 2 - 1), **opts)
        self.log(f"{stage}/recon_mse", F.mse_loss(recon, x01), **opts)
        ssim = structural_similarity_index_measure(recon, x01, data_range=1.0)
        self.log(f"{stage}/ssim", ssim, **opts)
        psnr = peak_signal_noise_ratio(recon, x01, data_range=1.0, reduction="none", dim=(1, 2, 3))
        self.log(f"{stage}/psnr", psnr.mean(), **opts)
        real_logits = self.discriminator(x01 * 2 - 1)
        self.log(f"{stage}/d_real_acc", (real_logits > 0).float().mean(), **opts)

    def validation_step(self, batch, batch_idx: int) -> None:
        with self.evaluation_rng(batch_idx):
            self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        with self.evaluation_rng(batch_idx):
            self._evaluate(batch, "test")

"""A class-conditional VAE with MLP nets: the conditional example of docs/models.md.

    python train.py model=mlp_cvae                     # conf/model/mlp_cvae.yaml points here
    python sample.py ckpt_path=<run>/checkpoints/last.ckpt labels=all

What makes a model conditional (the contract's one flag): ``num_classes`` > 0, passed on to
``GenerativeModel``, and ``generate(z, labels)``. ``sample(n, generator, labels)`` is built on
it and draws uniform classes from the generator when no labels are given, so every
unconditional consumer (the FID monitor, ``eval.py``, sweeps) works unchanged, and the
class-aware ones (``sample.py labels=...``, the per-class grids and metrics) can ask for classes.
Training reads each image's class at ``batch[1]``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genlab.models.base import GenerativeModel, OptimizerFactory


class MLPCVAE(GenerativeModel):
    monitor = "val/elbo"  # a bound on log p(x | y), logged by validation_step below
    monitor_mode = "max"
    model_metrics = ("elbo",)
    logged_metrics = ("train/elbo", "val/elbo")

    def __init__(
        self,
        *,
        optimizer: OptimizerFactory,
        num_classes: int,
        channels: int = 1,
        image_size: int = 28,
        hidden: int = 256,
        **base: Any,  # latent_dim, monitor, scheduler, ...: see GenerativeModel
    ) -> None:
        super().__init__(num_classes=num_classes, **base)
        self.shape = (channels, image_size, image_size)
        pixels = math.prod(self.shape)
        # The class as a one-hot vector beside the image (encoder) and the latent (decoder).
        self.encoder = nn.Sequential(
            nn.Linear(pixels + num_classes, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 2 * self.latent_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(self.latent_dim + num_classes, hidden), nn.ReLU(), nn.Linear(hidden, pixels)
        )
        self.optimizer_factory = optimizer

    def configure_optimizers(self):
        return self.optimizer_factory(self.parameters())

    def one_hot(self, labels: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.one_hot(labels, self.num_classes).to(like.dtype)

    # The contract: latents and classes -> images in [0, 1].
    def generate(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = self.decoder(torch.cat([z, self.one_hot(labels, z)], dim=1))
        return torch.sigmoid(logits).view(-1, *self.shape)

    def private_nets(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "decoder": self.decoder}

    def elbo(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One-sample ELBO of log p(x | y) per image, in nats (Bernoulli decoder)."""
        y = self.one_hot(labels, x)
        mu, logvar = self.encoder(torch.cat([x.flatten(1), y], dim=1)).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        logits = self.decoder(torch.cat([z, y], dim=1)).view_as(x)
        log_px = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        return log_px - kl

    def training_step(self, batch: Any, batch_idx: int) -> None:
        images, labels = batch[0], batch[1]
        loss = -self.elbo(images, labels).mean()
        self.backward_and_step(loss, self.optimizers(), "train/loss")
        if self.logging_step(batch_idx):
            self.log("train/elbo", -loss, prog_bar=True)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        with self.evaluation_rng(batch_idx):
            elbo = self.elbo(batch[0], batch[1]).mean()
            self.log("val/elbo", elbo, on_epoch=True, sync_dist=True)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        with self.evaluation_rng(batch_idx):
            elbo = self.elbo(batch[0], batch[1]).mean()
            self.log("test/elbo", elbo, on_epoch=True, sync_dist=True)

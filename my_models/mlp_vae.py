"""A VAE with MLP encoder and decoder: the worked example of docs/models.md.

    python train.py model=mlp_vae                 # conf/model/mlp_vae.yaml points here
    python train.py model=mlp_vae model.hidden=512 trainer.max_epochs=20

Everything genlab gives a model (sample grids, the FID monitor, checkpoints, exact resume,
``sample.py``, ``eval.py``, sweeps, DP-SGD) comes from the contract: ``generate`` (or
``sample``), a monitor it logs, and the declarations below. Nothing in ``src/genlab`` knows
this class.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genlab.models.base import GenerativeModel, OptimizerFactory


class MLPVAE(GenerativeModel):
    monitor = "val/elbo"  # logged by validation_step below; higher is better
    monitor_mode = "max"
    model_metrics = ("elbo",)  # what its test_step adds to eval.py's sample metrics
    logged_metrics = ("train/elbo", "val/elbo")  # what model.monitor may name

    def __init__(
        self,
        *,
        optimizer: OptimizerFactory,
        channels: int = 1,
        image_size: int = 28,
        hidden: int = 256,
        **base: Any,  # latent_dim, monitor, scheduler, ...: see GenerativeModel
    ) -> None:
        super().__init__(**base)
        self.shape = (channels, image_size, image_size)
        pixels = math.prod(self.shape)
        self.encoder = nn.Sequential(
            nn.Flatten(),
            nn.Linear(pixels, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 2 * self.latent_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(self.latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, pixels)
        )
        self.optimizer_factory = optimizer

    def configure_optimizers(self):
        return self.optimizer_factory(self.parameters())

    # The contract: latents -> images in [0, 1]. sample(n, generator) is built on it.
    def generate(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(z)).view(-1, *self.shape)

    # Optional: the nets that see real images, so privacy.enabled=true can train them.
    def private_nets(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "decoder": self.decoder}

    def elbo(self, x: torch.Tensor) -> torch.Tensor:
        """One-sample ELBO per image, in nats (Bernoulli decoder)."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        logits = self.decoder(z).view_as(x)
        log_px = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        return log_px - kl

    def training_step(self, batch: Any, batch_idx: int) -> None:
        loss = -self.elbo(batch[0]).mean()
        self.backward_and_step(loss, self.optimizers(), "train/loss")  # NaN check included
        if self.logging_step(batch_idx):
            self.log("train/elbo", -loss, prog_bar=True)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        with self.evaluation_rng(batch_idx):  # scores do not move the training RNG
            self.log("val/elbo", self.elbo(batch[0]).mean(), on_epoch=True, sync_dist=True)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        with self.evaluation_rng(batch_idx):
            self.log("test/elbo", self.elbo(batch[0]).mean(), on_epoch=True, sync_dist=True)

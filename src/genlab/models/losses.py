"""Loss functions. GAN losses take discriminator *logits* (stable under bf16/fp16 autocast)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


# --- GAN ----------------------------------------------------------------------------------------
def nonsaturating_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(x) - log(1 - D(G(z))), written with softplus: -log sigmoid(t) = softplus(-t)."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def nonsaturating_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(G(z)) (Goodfellow et al., 2014): strong gradients early, when D wins easily."""
    return F.softplus(-fake_logits).mean()


GAN_LOSSES = {"nonsaturating": (nonsaturating_d_loss, nonsaturating_g_loss)}


# --- VAE ----------------------------------------------------------------------------------------
def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per example, in nats."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)


def bernoulli_log_likelihood(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x | logits) per example, summed over pixels (x in [0, 1])."""
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    return -bce.flatten(1).sum(1)


def gaussian_log_likelihood(
    mean: torch.Tensor, log_sigma: torch.Tensor, x: torch.Tensor
) -> torch.Tensor:
    """log N(x | mean, sigma^2) per example, summed over pixels (a density: nats, not bits)."""
    log_sigma = log_sigma.expand_as(mean)
    z = (x - mean) * torch.exp(-log_sigma)
    log_prob = -0.5 * z.pow(2) - log_sigma - 0.5 * math.log(2 * math.pi)
    return log_prob.flatten(1).sum(1)

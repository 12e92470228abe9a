"""Loss functions. GAN losses take discriminator *logits* (stable under bf16/fp16 autocast)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


# --- GAN ----------------------------------------------------------------------------------------
# Each loss is a pair (d_loss(real_logits, fake_logits), g_loss(fake_logits)); "logits" are the
# discriminator's raw outputs (a critic's scores for the Wasserstein loss).
def nonsaturating_d_loss(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """-log D(x) - log(1 - D(G(z))), written with softplus: -log sigmoid(t) = softplus(-t).
    ``label_smoothing`` s uses target 1 - s for real images (one-sided; Salimans et al., 2016)."""
    if label_smoothing:
        targets = torch.full_like(real_logits, 1.0 - label_smoothing)
        real_term = F.binary_cross_entropy_with_logits(real_logits, targets)
    else:
        real_term = F.softplus(-real_logits).mean()
    return real_term + F.softplus(fake_logits).mean()


def nonsaturating_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(G(z)) (Goodfellow et al., 2014): strong gradients early, when D wins easily."""
    return F.softplus(-fake_logits).mean()


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """max(0, 1 - D(x)) + max(0, 1 + D(G(z))) (Lim & Ye, 2017; SNGAN, BigGAN)."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()


def wasserstein_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Critic loss E[D(G(z))] - E[D(x)] (Arjovsky et al., 2017); needs a Lipschitz constraint:
    the gradient penalty (``model.gradient_penalty``) or spectral normalisation."""
    return fake_logits.mean() - real_logits.mean()


def wasserstein_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()


def least_squares_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """LSGAN (Mao et al., 2017), targets 1 (real) and 0 (fake), halved as in the paper."""
    return 0.5 * ((real_logits - 1).pow(2).mean() + fake_logits.pow(2).mean())


def least_squares_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return 0.5 * (fake_logits - 1).pow(2).mean()


GAN_LOSSES = {
    "non_saturating": (nonsaturating_d_loss, nonsaturating_g_loss),
    "hinge": (hinge_d_loss, hinge_g_loss),
    "wasserstein": (wasserstein_d_loss, wasserstein_g_loss),
    "least_squares": (least_squares_d_loss, least_squares_g_loss),
}
GAN_LOSSES["nonsaturating"] = GAN_LOSSES["non_saturating"]  # the foundation's spelling


# --- VAE ----------------------------------------------------------------------------------------
def gaussian_kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) of each latent dimension, in nats."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per example, in nats."""
    return gaussian_kl_per_dim(mu, logvar).flatten(1).sum(1)


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

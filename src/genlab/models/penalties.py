"""Discriminator regularisers: gradient penalty (WGAN-GP) and R1. Both return a scalar to add
to the discriminator loss, already multiplied by their weight."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def _input_gradients(discriminator: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(x).sum(), x, create_graph=True)
    return grad.flatten(1)


def gradient_penalty(
    discriminator: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, weight: float = 10.0
) -> Tensor:
    """weight * E[(||grad D(x_hat)|| - 1)^2] at random points between real and fake images
    (Gulrajani et al., 2017): keeps the critic near 1-Lipschitz."""
    alpha = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device)
    mixed = alpha * real.detach() + (1 - alpha) * fake.detach()
    grad = _input_gradients(discriminator, mixed)
    return weight * (grad.norm(2, dim=1) - 1).pow(2).mean()


def r1_penalty(
    discriminator: Callable[[Tensor], Tensor], real: Tensor, gamma: float = 10.0
) -> Tensor:
    """(gamma / 2) * E[||grad D(x)||^2] on real images (Mescheder et al., 2018): stops D from
    pushing up on the data manifold. Lazily applied every k steps, scale it by k (StyleGAN2)."""
    grad = _input_gradients(discriminator, real)
    return 0.5 * gamma * grad.pow(2).sum(dim=1).mean()

"""Differentiable augmentation of the discriminator's inputs (DiffAugment; Zhao et al., 2020).

The same random transformation family is applied to real *and* generated images each time D
sees them, and it is differentiable, so G's gradients flow through it. With little data this
keeps D from memorising the training set without leaking the augmentation into the samples.
Images are in the generator's [-1, 1] range, ``[N, C, H, W]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from genlab.errors import ConfigError


def color(x: Tensor) -> Tensor:
    """Random brightness, saturation and contrast per image."""
    n = x.shape[0]
    x = x + (torch.rand(n, 1, 1, 1, device=x.device) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (torch.rand(n, 1, 1, 1, device=x.device) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (torch.rand(n, 1, 1, 1, device=x.device) + 0.5) + mean


def translation(x: Tensor, ratio: float = 0.125) -> Tensor:
    """Shift each image by up to ``ratio`` of its size (zero padding), by integer pixels."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (n,), device=x.device)
    dx = torch.randint(-sw, sw + 1, (n,), device=x.device)
    padded = F.pad(x, (sw, sw, sh, sh)).permute(0, 2, 3, 1)  # [n, H + 2sh, W + 2sw, C]
    rows = (torch.arange(h, device=x.device).view(1, h) + sh - dy.view(n, 1)).view(n, h, 1)
    cols = (torch.arange(w, device=x.device).view(1, w) + sw - dx.view(n, 1)).view(n, 1, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    return padded[batch, rows, cols].permute(0, 3, 1, 2)  # [n, h, w, C] -> NCHW


def cutout(x: Tensor, ratio: float = 0.5) -> Tensor:
    """Zero a random square of ``ratio`` of the image size per image."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + 1 - ch % 2, (n, 1, 1), device=x.device)
    cx = torch.randint(0, w + 1 - cw % 2, (n, 1, 1), device=x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = ((ys - cy).abs() <= ch // 2) & ((xs - cx).abs() <= cw // 2)
    return x * (~inside).unsqueeze(1).to(x.dtype)


POLICIES = {"color": color, "translation": translation, "cutout": cutout}


def check_policy(policy: list[str] | tuple[str, ...]) -> list[str]:
    unknown = [p for p in policy if p not in POLICIES]
    if unknown:
        raise ConfigError(
            f"model.diffaugment={list(policy)}: unknown {unknown}; choose from {sorted(POLICIES)}."
        )
    return list(policy)


def diff_augment(x: Tensor, policy: list[str]) -> Tensor:
    for name in policy:
        x = POLICIES[name](x)
    return x

"""An exponential moving average of a net's weights: a frozen copy whose weights trail the
net's, sampled from instead of it (smoother samples for the same training)."""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_copy(net: nn.Module) -> nn.Module:
    """The frozen copy that ``ema_update`` keeps trailing ``net``."""
    return copy.deepcopy(net).requires_grad_(False)


@torch.no_grad()
def ema_update(ema: nn.Module, net: nn.Module, updates: torch.Tensor, decay: float) -> None:
    """ema <- d * ema + (1 - d) * net, buffers (BatchNorm statistics) copied. ``updates`` (a
    buffer of the model, so a resumed run keeps its warm-up) counts the calls; d warms up as
    min(decay, (1 + t) / (10 + t)) over the t-th update, so early samples are not dominated by
    the random initial weights."""
    updates += 1
    t = float(updates)
    d = min(decay, (1 + t) / (10 + t))
    for averaged, p in zip(ema.parameters(), net.parameters(), strict=True):
        averaged.lerp_(p, 1.0 - d)
    for averaged, b in zip(ema.buffers(), net.buffers(), strict=True):
        averaged.copy_(b)

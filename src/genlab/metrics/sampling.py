"""Seeded samples from any model that fulfils the contract (docs/models.md), in batches.

Metrics and ``sample.py`` take their images from here, so a seed means the same images
everywhere: the FID callback, ``eval.py`` and sample files.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch


def iter_samples(model: Any, n: int, seed: int, batch_size: int) -> Iterator[torch.Tensor]:
    """``n`` samples as float32 CPU batches in [0, 1] (scores are computed in float32 whatever
    the model's precision).

    A model with ``latent_dim`` and ``generate(z)`` gets all its latents drawn first from one
    seeded generator, so the images depend on neither ``batch_size`` nor the device. Any other
    model is asked for ``sample(b, generator)`` batch by batch from one seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    latent_dim = getattr(model, "latent_dim", None)
    generate = getattr(model, "generate", None)
    z = None
    if latent_dim is not None and generate is not None:
        z = torch.randn(n, latent_dim, generator=generator)
    for start in range(0, n, batch_size):
        count = min(batch_size, n - start)
        with torch.no_grad():
            if z is not None:
                zb = z[start : start + count].to(device=model.device, dtype=model.dtype)
                images = generate(zb)
            else:
                images = model.sample(count, generator=generator)
        yield images.float().clamp(0, 1).cpu()


def draw(model: Any, n: int, seed: int, batch_size: int) -> torch.Tensor:
    """``n`` samples on the CPU, the concatenation of ``iter_samples``."""
    return torch.cat(list(iter_samples(model, n, seed, batch_size)))

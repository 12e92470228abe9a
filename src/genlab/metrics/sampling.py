"""Seeded samples from any model that fulfils the contract (docs/models.md), in batches.

Metrics and ``sample.py`` take their images from here, so a seed means the same images
everywhere: the FID callback, ``eval.py`` and sample files.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

from genlab.errors import CheckpointError


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


def finite_samples(batches: Iterable[torch.Tensor], source: str) -> Iterator[torch.Tensor]:
    """Pass sample batches through, stopping at the first one that holds NaN: a diverged
    model's images, which would otherwise be written to a file or reach the metrics' matrix
    routines. (Inf is already clamped to 0 or 1 by ``iter_samples``.) ``source`` names the
    model in the error, e.g. ``ckpt_path=.../last.ckpt``."""
    seen = 0
    for batch in batches:
        bad = torch.isnan(batch.flatten(1)).any(dim=1)
        if bool(bad.any()):
            first = seen + int(bad.nonzero()[0])
            raise CheckpointError(
                f"{source} generates NaN images ({int(bad.sum())} of samples {seen}-"
                f"{seen + len(batch) - 1}, first: {first}): the model diverged before this "
                "checkpoint was saved; use an earlier checkpoint of the run (checkpoints/)."
            )
        seen += len(batch)
        yield batch


def draw(model: Any, n: int, seed: int, batch_size: int, source: str | None = None) -> torch.Tensor:
    """``n`` samples on the CPU, the concatenation of ``iter_samples``; with ``source`` (the
    model's name for errors), checked free of NaN by ``finite_samples``."""
    batches = iter_samples(model, n, seed, batch_size)
    if source is not None:
        batches = finite_samples(batches, source)
    return torch.cat(list(batches))

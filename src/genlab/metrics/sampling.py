"""Seeded samples from any model that fulfils the contract (docs/models.md), in batches.

Metrics and ``sample.py`` take their images from here, so a seed means the same images
everywhere: the FID callback, ``eval.py`` and sample files.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

from genlab.errors import CheckpointError, ConfigError


def num_classes(model: Any) -> int:
    """How many classes ``model`` is conditioned on: its ``num_classes`` attribute, 0 (or
    none) for an unconditional model (docs/models.md, the contract)."""
    return int(getattr(model, "num_classes", 0) or 0)


def draw_labels(classes: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` classes drawn uniformly from ``range(classes)`` on the CPU (a LongTensor)."""
    return torch.randint(classes, (n,), generator=generator)


def check_labels(labels: Any, n: int, classes: int) -> torch.Tensor:
    """``labels`` as a LongTensor of ``n`` classes in ``[0, classes)``, or a one-line error."""
    labels = torch.as_tensor(labels)
    if labels.is_floating_point() or labels.shape != (n,):
        raise ConfigError(
            f"labels must be {n} integer classes (one per image), got a {labels.dtype} tensor "
            f"of shape {tuple(labels.shape)}."
        )
    labels = labels.long()
    if n and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        raise ConfigError(
            f"labels {sorted(set(labels.tolist()))} are outside this model's classes "
            f"0..{classes - 1}: ask for classes it was trained on."
        )
    return labels


def iter_samples(
    model: Any, n: int, seed: int, batch_size: int, labels: torch.Tensor | None = None
) -> Iterator[torch.Tensor]:
    """``n`` samples as float32 CPU batches in [0, 1] (scores are computed in float32 whatever
    the model's precision).

    A model with ``latent_dim`` and ``generate(z)`` gets all its latents drawn first from one
    seeded generator, so the images depend on neither ``batch_size`` nor the device. Any other
    model is asked for ``sample(b, generator)`` batch by batch from one seeded generator.

    A conditional model (``num_classes`` > 0) draws image i of class ``labels[i]``; without
    ``labels``, classes are drawn uniformly from the same generator after the latents. An
    unconditional model refuses ``labels``."""
    generator = torch.Generator().manual_seed(seed)
    classes = num_classes(model)
    if labels is not None and not classes:
        raise ConfigError(
            f"{type(model).__name__} is unconditional: it cannot be asked for classes "
            "(labels=...). Train a conditional model (model=cgan, model=cvae) or drop labels."
        )
    latent_dim = getattr(model, "latent_dim", None)
    generate = getattr(model, "generate", None)
    z = None
    if latent_dim is not None and generate is not None:
        z = torch.randn(n, latent_dim, generator=generator)
    if classes:
        labels = draw_labels(classes, n, generator) if labels is None else labels
        labels = check_labels(labels, n, classes)
    for start in range(0, n, batch_size):
        count = min(batch_size, n - start)
        with torch.no_grad():
            yb = None if labels is None else labels[start : start + count].to(model.device)
            if z is not None:
                zb = z[start : start + count].to(device=model.device, dtype=model.dtype)
                images = generate(zb) if yb is None else generate(zb, yb)
            elif yb is not None:
                images = model.sample(count, generator=generator, labels=yb)
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


def draw(
    model: Any,
    n: int,
    seed: int,
    batch_size: int,
    source: str | None = None,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """``n`` samples on the CPU, the concatenation of ``iter_samples``; with ``source`` (the
    model's name for errors), checked free of NaN by ``finite_samples``."""
    batches = iter_samples(model, n, seed, batch_size, labels)
    if source is not None:
        batches = finite_samples(batches, source)
    return torch.cat(list(batches))

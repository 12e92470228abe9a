"""Training-time augmentation from config: ``data.augment=[hflip, rotate, scale_crop, ...]``.

Each entry is a name or ``{name: ..., <parameter>: ...}``; they are applied in order to float
``[C, H, W]`` images in [0, 1], to training data only. On small data sets augmentation is the
first remedy for a discriminator that memorises its training set (Karras et al., 2020), but it
leaks into samples when it changes what a real image looks like (a rotated face is still a
face; a flipped digit is not a digit).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torchvision.transforms import v2

from genlab.errors import ConfigError


def _shift(image_size: int, pixels: int = 2) -> v2.Transform:
    return v2.RandomAffine(degrees=0, translate=(pixels / image_size, pixels / image_size))


# name -> (builder(image_size, **params), default params)
AUGMENTATIONS: dict[str, tuple[Callable[..., v2.Transform], dict[str, Any]]] = {
    "hflip": (lambda size, p: v2.RandomHorizontalFlip(p), {"p": 0.5}),
    "rotate": (lambda size, degrees: v2.RandomRotation(degrees), {"degrees": 10.0}),
    "scale_crop": (
        lambda size, scale: v2.RandomResizedCrop(size, scale=tuple(scale), antialias=True),
        {"scale": (0.8, 1.0)},
    ),
    "color_jitter": (
        lambda size, brightness, contrast, saturation, hue: v2.ColorJitter(
            brightness, contrast, saturation, hue
        ),
        {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.02},
    ),
    "shift": (lambda size, pixels: _shift(size, pixels), {"pixels": 2}),
}


def build_augmentation(
    spec: Sequence[str | dict] | None, image_size: int
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """``[hflip, {name: rotate, degrees: 5}]`` -> one transform (``None`` for an empty list)."""
    if not spec:
        return None
    steps = []
    for entry in spec:
        params = dict(entry) if not isinstance(entry, str) else {"name": entry}
        name = params.pop("name", None)
        if name not in AUGMENTATIONS:
            raise ConfigError(
                f"data.augment entry {entry!r}: unknown augmentation; choose from "
                f"{sorted(AUGMENTATIONS)} (a name, or {{name: ..., <parameter>: ...}})."
            )
        builder, defaults = AUGMENTATIONS[name]
        unknown = set(params) - set(defaults)
        if unknown:
            raise ConfigError(
                f"data.augment {name}: unknown parameters {sorted(unknown)}; it takes "
                f"{sorted(defaults)}."
            )
        steps.append(builder(image_size, **{**defaults, **params}))
    return v2.Compose(steps)

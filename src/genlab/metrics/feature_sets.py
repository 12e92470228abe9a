"""Feature sets to score: generated samples (streamed) and real images (cached on disk).

Real features are computed once per (data set, split, resolution, channels, extractor and its
weights, image count) and stored under ``cache_dir`` as ``<data>-<split>-<n>x<C>x<H>x<W>-
<extractor>-<digest>.pt``, with the images' class labels beside them (the class-conditional
metrics compare each class with its own real images). The digest hashes the images' 8-bit
pixels, their labels and the extractor's identity, so any change to the data, the split, the
resize, the labels or the weights picks a new file.

A cache file is derived data: one that cannot be loaded (truncated, garbage, another type) or
does not match its key is moved aside to ``<name>.corrupt-<n>`` (kept for inspection, never
deleted) with one warning, and the features are extracted again in the same run.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor

from genlab.errors import ConfigError
from genlab.metrics.features import LOAD_ERRORS, FeatureExtractor, quantize
from genlab.metrics.sampling import iter_samples
from genlab.utils.atomic import atomic_path, move_aside

log = logging.getLogger(__name__)
CACHE_VERSION = 3  # bump when the stored format or the feature pipeline changes (3: labels)
SPLITS = ("val", "test")  # what sample metrics compare with: never the training images
AUDIT_SPLITS = ("train", *SPLITS)  # the memorization audit compares with those too

Features = tuple[Tensor, Tensor]  # (features [N, D], logits [N, K]), on the CPU
# (features [N, D], logits [N, K], labels [N]): int64 classes, -1 for an image without one
LabelledFeatures = tuple[Tensor, Tensor, Tensor]
NO_LABEL = -1  # the label of an item that carries none (a data set of bare images)


@torch.inference_mode()
def extract(
    extractor: FeatureExtractor, batches: Iterable[Tensor], device: torch.device | str = "cpu"
) -> Features:
    """Features of image batches in [0, 1], quantised to 8 bits first like real images."""
    extractor = extractor.to(device)
    feats, logits = [], []
    for batch in batches:
        f, lg = extractor(quantize(batch.to(device)))
        feats.append(f.float().cpu())
        logits.append(lg.float().cpu())
    return torch.cat(feats), torch.cat(logits)


def generated_features(
    model,
    extractor: FeatureExtractor,
    num_samples: int,
    seed: int = 0,
    batch_size: int = 500,
    labels: Tensor | None = None,
) -> Features:
    """Features of ``num_samples`` seeded samples of ``model``, generated batch by batch; a
    conditional model draws sample i of class ``labels[i]`` (uniform classes without)."""
    was_training = model.training
    model.eval()
    try:
        batches = iter_samples(model, num_samples, seed, batch_size, labels)
        return extract(extractor, batches, model.device)
    finally:
        model.train(was_training)


def split_items(
    datamodule, split: str, num_images: int | None = None, allowed: tuple[str, ...] = SPLITS
) -> tuple[Tensor, Tensor]:
    """The first ``num_images`` images of a data module's ``train``, ``val`` or ``test`` split,
    in [0, 1] (the training set as the model saw it, before augmentation: see evaluate), and
    their classes (int64; ``NO_LABEL`` for items without one)."""
    if split not in allowed:
        raise ConfigError(f"real statistics use split={split!r}: choose one of {allowed}.")
    dataset = getattr(datamodule, f"{split}_set", None)
    if dataset is None:
        datamodule.prepare_data()
        datamodule.setup("test" if split == "test" else "fit")
        dataset = getattr(datamodule, f"{split}_set")
    n = len(dataset) if num_images is None else min(num_images, len(dataset))
    items = [dataset[i] for i in range(n)]
    pairs = [item if isinstance(item, (tuple, list)) else (item,) for item in items]
    images = torch.stack([pair[0] for pair in pairs])
    labels = torch.tensor([int(p[1]) if len(p) > 1 else NO_LABEL for p in pairs], dtype=torch.long)
    return images, labels.reshape(n)


def split_images(
    datamodule, split: str, num_images: int | None = None, allowed: tuple[str, ...] = SPLITS
) -> Tensor:
    """The images of ``split_items``, without their labels."""
    return split_items(datamodule, split, num_images, allowed)[0]


def _atomic_save(obj: object, path: Path) -> None:
    """An interrupted run or two concurrent runs never leave half a file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _load_cached(
    path: Path, key: str, n: int, extractor: FeatureExtractor
) -> LabelledFeatures | str:
    """The cached features, logits and labels, or what is wrong with the file."""
    try:
        cached = torch.load(path, map_location="cpu", weights_only=True)
    except LOAD_ERRORS as e:
        # The type only: torch's own messages run to paragraphs and advise weights_only=False,
        # which is no remedy for a damaged file.
        return f"cannot be loaded: {type(e).__name__}"
    if not isinstance(cached, dict):
        return f"holds a {type(cached).__name__}, not the features"
    if cached.get("key") != key:
        return "written for other images or another extractor (its key differs)"
    features, logits = cached.get("features"), cached.get("logits")
    dims = (getattr(extractor, "num_features", None), getattr(extractor, "num_classes", None))
    for name, value, dim in (("features", features, dims[0]), ("logits", logits, dims[1])):
        if not isinstance(value, Tensor) or value.dim() != 2 or not value.is_floating_point():
            return f"its {name} are not a 2-d float tensor"
        if len(value) != n or (dim is not None and value.shape[1] != dim):
            return f"its {name} have shape {list(value.shape)}, not [{n}, {dim or 'D'}]"
    labels = cached.get("labels")
    if not isinstance(labels, Tensor) or labels.dtype != torch.long or labels.shape != (n,):
        return f"its labels are not {n} int64 classes"
    return features, logits, labels


def real_features(
    datamodule,
    split: str,
    extractor: FeatureExtractor,
    cache_dir: str | Path | None,
    num_images: int | None = None,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    allowed: tuple[str, ...] = SPLITS,
) -> Features:
    """Features of real images, from the cache when an identical set was extracted before."""
    features, logits, _ = labelled_real_features(
        datamodule, split, extractor, cache_dir, num_images, batch_size, device, allowed
    )
    return features, logits


def labelled_real_features(
    datamodule,
    split: str,
    extractor: FeatureExtractor,
    cache_dir: str | Path | None,
    num_images: int | None = None,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    allowed: tuple[str, ...] = SPLITS,
) -> LabelledFeatures:
    """``real_features`` and the images' classes (``NO_LABEL`` where an image has none), for
    the class-conditional metrics: one cache file holds all three."""
    images, labels = split_items(datamodule, split, num_images, allowed)
    pixels = quantize(images).mul(255).to(torch.uint8)
    digest = hashlib.sha256(pixels.numpy().tobytes())
    digest.update(labels.numpy().tobytes())
    digest.update(f"{extractor.identity}-v{CACHE_VERSION}".encode())
    key = digest.hexdigest()
    name = getattr(datamodule, "dataset", None) or type(datamodule).__name__
    shape = "x".join(str(s) for s in images.shape)
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{name}-{split}-{shape}-{extractor.name}-{key[:16]}.pt"
        if path.is_file():
            cached = _load_cached(path, key, len(images), extractor)
            if not isinstance(cached, str):
                return cached
            moved = move_aside(path)
            log.warning(
                "real-feature cache %s is broken (%s): moved aside to %s; extracting again",
                path, cached, moved or "(already gone)",
            )  # fmt: skip
    features, logits = extract(extractor, images.split(batch_size), device)
    if path is not None:
        _atomic_save({"key": key, "features": features, "logits": logits, "labels": labels}, path)
        log.info("cached real features: %s", path)
    return features, logits, labels

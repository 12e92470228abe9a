"""Metrics of class-conditional generation: pure functions on features, logits and labels.

    python eval.py ckpt_path=... metrics=[fid,cond_acc,intra_fid,class_pr]

A conditional model (``num_classes`` > 0, docs/models.md) is asked for the same number of
samples of every class, with explicit labels (``balanced_labels``), and each sample is scored
against the class it was asked for:

- ``cond_acc``: the share of samples that the feature net's classifier assigns to the class
  they were asked for (argmax logit == requested label). It reads the classifier's classes as
  the model's, so it is only meaningful where the feature net classifies the data's classes
  (``mnist_classifier`` on MNIST); a classifier with another number of classes is refused.
- ``intra_fid``: FID between one class's samples and that class's real images, per class and
  their mean over classes (Miyato & Koyama, ICLR 2018, "cGANs with projection discriminator").
- ``class_pr``: improved precision and recall (Kynkaenniemi et al., NeurIPS 2019,
  ``scores.precision_recall``) within each class, per class and their means.

Each returns the mean under its key and class c's value under ``names.class_key(key, c)``
(``intra_fid/3``); eval.py writes them as ``test/<key>``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from genlab.errors import ConfigError, DataError
from genlab.metrics.names import CONDITIONAL_METRICS, class_key
from genlab.metrics.sampling import num_classes
from genlab.metrics.scores import (
    MIN_SAMPLES,
    PR_K,
    frechet_distance,
    precision_recall,
    require_finite,
)

# The fewest images of each class (generated, and real) a metric is computed on, and why.
MIN_PER_CLASS: dict[str, tuple[int, str]] = {
    "cond_acc": (1, "an image to classify"),
    "intra_fid": (MIN_SAMPLES["fid"][0], "a covariance per class; 1000 per class to report"),
    "class_pr": (PR_K + 1, f"each sample's {PR_K} nearest other samples of its class"),
}

LabelledFeatures = tuple[Tensor, Tensor, Tensor]  # (features [N, D], logits [N, C], labels [N])


def balanced_labels(classes: int, num_samples: int) -> Tensor:
    """``num_samples // classes`` samples of every class, class by class:
    ``[0, 0, ..., 1, 1, ..., classes - 1]`` (the remainder of the division is not drawn)."""
    return torch.arange(classes).repeat_interleave(num_samples // classes)


def too_few_per_class(metrics: Sequence[str], per_class: int) -> list[str]:
    """``"intra_fid needs >= 2 per class (...)"`` for each of ``metrics`` that ``per_class``
    images of each class cannot give; empty when all can be computed."""
    return [
        f"{m} needs >= {MIN_PER_CLASS[m][0]} per class ({MIN_PER_CLASS[m][1]})"
        for m in metrics
        if m in MIN_PER_CLASS and per_class < MIN_PER_CLASS[m][0]
    ]


def check_conditional(metrics: Sequence[str], model: Any, where: str) -> list[str]:
    """The conditional metrics among ``metrics``; a ``ConfigError`` naming the model (``where``,
    e.g. ``ckpt_path=x.ckpt``) and the metrics when ``model`` has no classes to ask for (an
    unconditional model, or ``None``: a file of samples)."""
    asked = [m for m in metrics if m in CONDITIONAL_METRICS]
    if not asked or (model is not None and num_classes(model) > 0):
        return asked
    what = ", ".join(asked)
    if model is None:
        raise ConfigError(
            f"metrics=[{what}] score samples of requested classes, but {where} is a file of "
            "samples without their classes: evaluate the conditional model's checkpoint "
            f"(ckpt_path=...), or leave {what} out of metrics=[...]."
        )
    raise ConfigError(
        f"metrics=[{what}] need a class-conditional model, but {where} is an unconditional "
        f"{type(model).__name__} (num_classes=0): evaluate a model=cgan or model=cvae "
        f"checkpoint, or leave {what} out of metrics=[...]."
    )


def check_classifier(
    classifier_classes: int | None, model_classes: int, features: str = "the feature net"
) -> None:
    """``cond_acc`` reads the feature net's classes as the model's: refused (one line) when
    their counts differ, e.g. features=inception (1008 ImageNet logits) for a 10-class model.
    ``None``: a feature net that does not say (checked again on its logits)."""
    if classifier_classes is None or classifier_classes == model_classes:
        return
    raise ConfigError(
        f"cond_acc compares {features}'s predicted class with the requested one, but it tells "
        f"{classifier_classes} classes apart and the model is conditioned on {model_classes}: "
        "it is only meaningful with a classifier of the data's classes (features="
        "mnist_classifier on MNIST); leave cond_acc out of metrics=[...] for this model."
    )


def _check_labels(labels: Tensor, rows: int, what: str) -> Tensor:
    if labels.is_floating_point() or labels.shape != (rows,):
        raise ValueError(
            f"{what}: labels must be {rows} integer classes, got {labels.dtype} "
            f"{tuple(labels.shape)}"
        )
    return labels.long().cpu()


def conditional_accuracy(logits: Tensor, labels: Tensor) -> tuple[float, list[float]]:
    """Share of samples whose argmax logit is the class they were asked for (``labels``), over
    all samples and per class ``0 .. logits.shape[1] - 1`` (nan for a class not asked for)."""
    require_finite(logits, "generated logits")
    labels = _check_labels(labels, len(logits), "generated logits")
    classes = logits.shape[1]
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        raise DataError(
            f"requested classes {int(labels.min())}..{int(labels.max())} are outside the "
            f"classifier's 0..{classes - 1}."
        )
    hits = (logits.argmax(dim=1).cpu() == labels).double()
    asked = torch.bincount(labels, minlength=classes).double()
    per_class = torch.bincount(labels, weights=hits, minlength=classes) / asked
    return float(hits.mean()), per_class.tolist()


def _per_class(
    compute: Callable[[Tensor, Tensor], float | tuple[float, ...]],
    real: Tensor,
    real_labels: Tensor,
    fake: Tensor,
    fake_labels: Tensor,
    classes: int,
) -> list[tuple[float, ...]]:
    """``compute(real rows of class c, fake rows of class c)`` for each class c, as tuples."""
    out = []
    for c in range(classes):
        value = compute(real[real_labels == c], fake[fake_labels == c])
        out.append(value if isinstance(value, tuple) else (value,))
    return out


def intra_fid(
    real: Tensor, real_labels: Tensor, fake: Tensor, fake_labels: Tensor, classes: int
) -> tuple[float, list[float]]:
    """Intra-class FID (Miyato & Koyama, 2018): FID between class c's generated and real
    features for every class ``c < classes``; (mean over classes, per class)."""
    per_class = _per_class(frechet_distance, real, real_labels, fake, fake_labels, classes)
    values = [value for (value,) in per_class]
    return sum(values) / len(values), values


def class_precision_recall(
    real: Tensor,
    real_labels: Tensor,
    fake: Tensor,
    fake_labels: Tensor,
    classes: int,
    k: int = PR_K,
) -> tuple[float, float, list[float], list[float]]:
    """Precision and recall (Kynkaenniemi et al., 2019, k-NN manifolds) within each class:
    (mean precision, mean recall over classes, per-class precision, per-class recall)."""

    def pr(r: Tensor, f: Tensor) -> tuple[float, float]:
        return precision_recall(r, f, k)

    values = _per_class(pr, real, real_labels, fake, fake_labels, classes)
    precision, recall = [p for p, _ in values], [r for _, r in values]
    return sum(precision) / classes, sum(recall) / classes, precision, recall


def _check_class_counts(
    metrics: Sequence[str], labels: Tensor, classes: int, source: str, what: str
) -> None:
    """Every class ``< classes`` has enough rows among ``labels`` for every metric, or one
    DataError listing the short classes."""
    counts = torch.bincount(labels[(labels >= 0) & (labels < classes)], minlength=classes)
    if not bool((labels >= 0).any()):
        raise DataError(
            f"{source} carry no classes (every label is -1): the class-conditional metrics "
            f"({', '.join(metrics)}) need {what} with class labels, e.g. an image folder with "
            "one subfolder per class."
        )
    for metric in metrics:
        least = MIN_PER_CLASS[metric][0]
        short = [c for c in range(classes) if counts[c] < least]
        if short:
            shown = ", ".join(f"class {c}: {int(counts[c])}" for c in short[:5])
            raise DataError(
                f"{source}: {metric} needs >= {least} {what} per class "
                f"({MIN_PER_CLASS[metric][1]}), but {len(short)} of the {classes} classes have "
                f"fewer ({shown}{', ...' if len(short) > 5 else ''})."
            )


def conditional_score(
    real: LabelledFeatures,
    fake: LabelledFeatures,
    metrics: Sequence[str],
    classes: int,
    pr_k: int = PR_K,
    sources: tuple[str, str] = ("the real images", "the generated samples"),
) -> dict[str, float]:
    """The requested conditional metrics from (features, logits, labels) of real images and of
    samples drawn for given classes (``fake``'s labels are the requested ones): the mean under
    each key of ``names.CONDITIONAL_KEYS`` and every class c's value under ``class_key(key, c)``.

    Every input is checked finite, labelled and large enough per class before any metric is
    computed; ``sources`` name the two sets in the errors."""
    unknown = set(metrics) - set(CONDITIONAL_METRICS)
    if unknown:
        raise ValueError(
            f"unknown conditional metrics {sorted(unknown)}; choose from {CONDITIONAL_METRICS}"
        )
    (real_feats, _, real_labels), (fake_feats, fake_logits, fake_labels) = real, fake
    real_labels = _check_labels(real_labels, len(real_feats), sources[0])
    fake_labels = _check_labels(fake_labels, len(fake_feats), sources[1])
    for (feats, logits, _), source in zip((real, fake), sources, strict=True):
        require_finite(feats, f"the features of {source}")
        require_finite(logits, f"the class logits of {source}")
    if "cond_acc" in metrics:
        check_classifier(fake_logits.shape[1], classes)
    if len(fake_labels) and (int(fake_labels.min()) < 0 or int(fake_labels.max()) >= classes):
        raise DataError(f"{sources[1]}: requested classes outside the model's 0..{classes - 1}.")
    _check_class_counts(metrics, fake_labels, classes, sources[1], "samples")
    per_real = [m for m in metrics if m != "cond_acc"]  # cond_acc reads no real image
    if per_real:
        _check_class_counts(per_real, real_labels, classes, sources[0], "real images")

    out: dict[str, float] = {}

    def put(key: str, mean: float, values: list[float]) -> None:
        out[key] = mean
        out.update({class_key(key, c): v for c, v in enumerate(values)})

    if "cond_acc" in metrics:
        put("cond_acc", *conditional_accuracy(fake_logits, fake_labels))
    if "intra_fid" in metrics:
        put("intra_fid", *intra_fid(real_feats, real_labels, fake_feats, fake_labels, classes))
    if "class_pr" in metrics:
        precision, recall, precisions, recalls = class_precision_recall(
            real_feats, real_labels, fake_feats, fake_labels, classes, pr_k
        )
        put("class_precision", precision, precisions)
        put("class_recall", recall, recalls)
    return out

"""Sample-quality scores computed from extracted features (see ``features.py``).

FID, KID and IS are torchmetrics' implementations fed with precomputed features, so real
features can be cached and shared between metrics. Precision/recall (Kynkaenniemi et al., 2019)
and class coverage are written here: no maintained library offers them on given features.
All functions take CPU or GPU tensors ``[N, D]`` and return Python floats.

No statistic runs on non-finite features (a diverged generator's NaN images give NaN
features, and the matrix routines under FID can kill the process on them), nor on fewer rows
than it needs (``MIN_SAMPLES``): both are one ``DataError`` instead.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

from genlab.errors import DataError
from genlab.metrics.distances import SPARE_CANDIDATES, exact_distances, nearest_k, shortlist
from genlab.metrics.names import SAMPLE_METRICS

IS_SPLITS = 10  # Inception Score: mean/std over this many splits of the samples
PR_K = 3  # precision/recall: the k-th nearest neighbour sets each manifold ball's radius

# The fewest rows (of each feature set) a metric can be computed on, and why.
MIN_SAMPLES: dict[str, tuple[int, str]] = {
    "fid": (2, "a covariance, full-rank above the feature dimension; 10000 to report"),
    "kid": (2, "an unbiased MMD over subsets of at least 2"),
    "is": (IS_SPLITS, f"one per split, {IS_SPLITS} splits"),
    "pr": (PR_K + 1, f"each sample's {PR_K} nearest other samples"),
    "coverage": (1, "a predicted class"),
}


def too_few(metrics: list[str] | tuple[str, ...], count: int) -> list[str]:
    """``"fid needs >= 2 (a covariance ...)"`` for each of ``metrics`` that ``count`` rows
    cannot give; empty when all can be computed."""
    return [
        f"{m} needs >= {MIN_SAMPLES[m][0]} ({MIN_SAMPLES[m][1]})"
        for m in metrics
        if m in MIN_SAMPLES and count < MIN_SAMPLES[m][0]
    ]


def require_finite(x: Tensor, what: str) -> None:
    """One clear error, before any statistic, when ``x`` (features, logits or images of
    ``what``) holds NaN or Inf."""
    bad = ~torch.isfinite(x.flatten(1)).all(dim=1)
    if bool(bad.any()):
        raise DataError(
            f"{what} hold NaN/Inf in {int(bad.sum())} of {len(x)} rows (first: row "
            f"{int(bad.nonzero()[0])}), so no score is computed on them: a diverged checkpoint "
            "generates NaN images; evaluate an earlier checkpoint or check the images with "
            "torch.isfinite."
        )


def _require_rows(metric: str, x: Tensor, what: str) -> None:
    problems = too_few([metric], len(x))
    if problems:
        raise DataError(f"{what}: {len(x)} rows, but {problems[0]}.")


class _Precomputed(nn.Module):
    """Identity 'extractor': lets torchmetrics' metrics take features we already have."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


def frechet_distance(real: Tensor, fake: Tensor) -> float:
    """FID between two feature sets (each needs >= 2 rows; use >= 10k for reported numbers)."""
    for x, what in ((real, "real features"), (fake, "generated features")):
        require_finite(x, what)
        _require_rows("fid", x, what)
    fid = FrechetInceptionDistance(feature=_Precomputed(real.shape[1]))
    fid.update(real.double(), real=True)
    fid.update(fake.double(), real=False)
    return float(fid.compute())


def kernel_distance(
    real: Tensor, fake: Tensor, subset_size: int = 1000, subsets: int = 100, seed: int = 0
) -> tuple[float, float]:
    """KID (mean, std over subsets): unbiased, so usable with few samples, unlike FID."""
    for x, what in ((real, "real features"), (fake, "generated features")):
        require_finite(x, what)
        _require_rows("kid", x, what)
    subset_size = min(subset_size, len(real), len(fake))
    kid = KernelInceptionDistance(
        feature=_Precomputed(real.shape[1]), subsets=subsets, subset_size=subset_size
    )
    # float32 suffices for the cubic kernel's mean and is several times faster than float64.
    kid.update(real.float(), real=True)
    kid.update(fake.float(), real=False)
    # KID and IS draw random subsets from the global RNG: fork it so scores are reproducible
    # and the training run's randomness is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = kid.compute()
    return float(mean), float(std)


def inception_score(logits: Tensor, splits: int = IS_SPLITS, seed: int = 0) -> tuple[float, float]:
    """IS (mean, std over splits) from classifier logits: exp E[KL(p(y|x) || p(y))]. With the
    MNIST classifier its maximum is 10 (confident predictions spread evenly over ten digits)."""
    require_finite(logits, "generated logits")
    if len(logits) < splits:  # fewer splits than asked for: the std would be nan or wrong
        raise DataError(
            f"generated logits: {len(logits)} rows, but is needs >= {splits} (one per split)."
        )
    score = InceptionScore(feature=_Precomputed(logits.shape[1]), splits=splits)
    score.update(logits.double())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = score.compute()
    return float(mean), float(std)


def _kth_neighbour_radius(x: Tensor, k: int, chunk: int) -> Tensor:
    """Distance from each row of x to its k-th nearest other row (exact: ``nearest_k``)."""
    return nearest_k(x, x, k + 1, chunk)[0][:, -1]  # k + 1: the nearest is the point itself


def _inside_manifold(points: Tensor, centres: Tensor, radii: Tensor, chunk: int) -> Tensor:
    """For each point: is it inside any ball (centre, radius)? The matmul shortlists the balls
    with the smallest |p - c|^2 - r^2; the verdict is on exact distances, so a copy of a centre
    whose ball has radius 0 (k + 1 identical images) is inside on every BLAS."""
    offset = centres.pow(2).sum(1) - radii.pow(2)
    inside = []
    for block in points.split(chunk):
        candidates = shortlist(block, centres, offset, 1 + SPARE_CANDIDATES)
        inside.append((exact_distances(block, centres, candidates) <= radii[candidates]).any(1))
    return torch.cat(inside)


def precision_recall(
    real: Tensor, fake: Tensor, k: int = 3, chunk: int = 1024
) -> tuple[float, float]:
    """Improved precision and recall (Kynkaenniemi et al., 2019), k-NN manifold estimate.

    Precision: share of generated samples inside the real manifold (quality). Recall: share of
    real samples inside the generated manifold (diversity; low under mode collapse).
    """
    real, fake = real.float(), fake.float()
    for x, what in ((real, "real features"), (fake, "generated features")):
        require_finite(x, what)
        if len(x) <= k:
            raise DataError(f"{what}: {len(x)} rows, but pr needs >= {k + 1} (k={k} neighbours).")
    real_radii = _kth_neighbour_radius(real, k, chunk)
    fake_radii = _kth_neighbour_radius(fake, k, chunk)
    precision = _inside_manifold(fake, real, real_radii, chunk).float().mean()
    recall = _inside_manifold(real, fake, fake_radii, chunk).float().mean()
    return float(precision), float(recall)


def class_coverage(logits: Tensor) -> dict[str, float | list[int]]:
    """Histogram of predicted classes and its KL divergence to uniform, in nats.

    A healthy generator on a balanced data set gives KL near 0 (MNIST test set: ~0.001) and
    covers every class; mode collapse shows as a high KL (one class only: log K).
    """
    require_finite(logits, "generated logits")
    num_classes = logits.shape[1]
    counts = torch.bincount(logits.argmax(dim=1).cpu(), minlength=num_classes)
    share = counts.double() / counts.sum()
    nonzero = share[share > 0]
    kl = float((nonzero * (nonzero * num_classes).log()).sum())
    return {
        "class_kl": kl,
        "classes_covered": int((counts > 0).sum()),
        "class_counts": counts.tolist(),
    }


def score(
    real: tuple[Tensor, Tensor],
    fake: tuple[Tensor, Tensor],
    metrics: list[str] | tuple[str, ...] = SAMPLE_METRICS,
    kid_subset_size: int = 1000,
    pr_k: int = PR_K,
    sources: tuple[str, str] = ("the real images", "the generated samples"),
) -> dict[str, float | list[int]]:
    """The requested sample metrics from (features, logits) of real and generated images.

    ``sources`` name the two sets in the errors (e.g. ``samples=x.npy``): every input is
    checked finite and large enough for every metric before any is computed."""
    unknown = set(metrics) - set(SAMPLE_METRICS)
    if unknown:
        raise ValueError(f"unknown sample metrics {sorted(unknown)}; choose from {SAMPLE_METRICS}")
    (real_feats, _), (fake_feats, fake_logits) = real, fake
    for (feats, logits), source in zip((real, fake), sources, strict=True):
        require_finite(feats, f"the features of {source}")
        require_finite(logits, f"the class logits of {source}")
        problems = too_few(metrics, len(feats))
        if problems:
            raise DataError(
                f"{source}: {len(feats)} images are too few: {'; '.join(problems)}. Use more "
                "images, or leave those metrics out of metrics=[...]."
            )
    out: dict[str, float | list[int]] = {}
    if "fid" in metrics:
        out["fid"] = frechet_distance(real_feats, fake_feats)
    if "kid" in metrics:
        out["kid"], out["kid_std"] = kernel_distance(real_feats, fake_feats, kid_subset_size)
    if "is" in metrics:
        out["is"], out["is_std"] = inception_score(fake_logits)
    if "pr" in metrics:
        out["precision"], out["recall"] = precision_recall(real_feats, fake_feats, pr_k)
    if "coverage" in metrics:
        out.update(class_coverage(fake_logits))
    return out

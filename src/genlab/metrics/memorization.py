"""Does a generator copy its training images? Nearest-neighbour distances and a data-copying test.

    python eval.py ckpt_path=... metrics=[memorization]
    python eval.py samples=samples.npy data=mnist metrics=[memorization]

For every generated sample and every held-out real image (the test split) we find the nearest
*training* image, in the evaluation feature space and in pixel space. A model that generalises
puts its samples about as far from the training set as unseen real images are; a model that
copies puts them closer. Two statistics:

- ``closer_than_heldout``: the fraction of samples nearer to a training image than the 5th
  percentile of held-out images are (about 0.05 without copying; 1.0 for a copier).
- ``copying_ct``, ``copying_p``: the data-copying test of Meehan, Chaudhuri and Dasgupta
  (AISTATS 2020). The training set is split into cells by k-means; in each cell a Mann-Whitney
  U test compares the samples' and the held-out images' distances to the training set, and
  ``C_T`` is the held-out-mass-weighted mean of the cells' z-scores (cells with too few samples
  are left out). ``C_T`` well below 0 (the paper flags < -3) means data-copying; ``copying_p``
  is the one-sided p-value of the combined z-score under "no copying".

Distances are computed in chunks (``chunk`` query rows at a time), so 10k samples against 60k
training images fit in memory and take seconds on a CPU; each chosen neighbour's distance is
recomputed from the difference, so a copied training image measures exactly 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from genlab.errors import DataError
from genlab.metrics.distances import nearest_k
from genlab.metrics.scores import require_finite

# Fewest generated samples the audit is computed on: a data-copying cell is scored with >= 5.
MIN_SAMPLES = 5


def nearest(query: Tensor, reference: Tensor, chunk: int = 2048) -> tuple[Tensor, Tensor]:
    """Euclidean distance from each query row to its nearest reference row, and that row.
    The distance is computed from the difference (``distances.nearest_k``): a sample that is
    a training image measures exactly 0, whatever the BLAS."""
    dist, index = nearest_k(query, reference, k=1, chunk=chunk)
    return dist[:, 0], index[:, 0]


def kmeans(points: Tensor, k: int, iterations: int = 20, seed: int = 0) -> Tensor:
    """Centres of ``k`` clusters (Lloyd's algorithm, k-means++-free random init, seeded)."""
    generator = torch.Generator().manual_seed(seed)
    points = points.flatten(1).float()
    centres = points[torch.randperm(len(points), generator=generator)[:k]].clone()
    for _ in range(iterations):
        assignment = nearest(points, centres)[1]
        for c in range(k):
            members = points[assignment == c]
            if len(members):
                centres[c] = members.mean(0)
    return centres


def _mann_whitney_z(generated: Tensor, heldout: Tensor) -> float:
    """z-score of U = #(generated farther than held-out) under "same distribution"; negative
    when the generated samples are closer to the training set."""
    m, n = len(generated), len(heldout)
    both = torch.cat([generated, heldout])
    ranks = torch.empty(m + n)
    ranks[both.argsort()] = torch.arange(1, m + n + 1, dtype=torch.float)
    u = ranks[:m].sum().item() - m * (m + 1) / 2
    return (u - m * n / 2) / math.sqrt(m * n * (m + n + 1) / 12)


@dataclass
class CopyingTest:
    ct: float  # Meehan et al.'s C_T: well below 0 (< -3) is data-copying
    z: float  # combined z-score of the kept cells (C_T / sqrt(sum of squared weights))
    p: float  # one-sided p-value of z under "no copying"
    cells_used: int


def data_copying_test(
    train: Tensor,
    generated: Tensor,
    heldout: Tensor,
    cells: int = 20,
    min_fraction: float = 0.01,
    seed: int = 0,
) -> CopyingTest:
    """Meehan et al.'s C_T on feature vectors: ``train`` [N, D], ``generated`` [M, D] and
    ``heldout`` [L, D]. Cells holding under ``min_fraction`` of the generated samples (or fewer
    than 5 of either set) are skipped, as in the paper."""
    for x, what in ((train, "training"), (generated, "generated"), (heldout, "held-out")):
        require_finite(x, f"{what} features")
    centres = kmeans(train, cells, seed=seed)
    gen_dist, heldout_dist = nearest(generated, train)[0], nearest(heldout, train)[0]
    gen_cell, heldout_cell = nearest(generated, centres)[1], nearest(heldout, centres)[1]
    zs, weights = [], []
    for c in range(cells):
        g, h = gen_dist[gen_cell == c], heldout_dist[heldout_cell == c]
        if len(g) < max(5, min_fraction * len(generated)) or len(h) < 5:
            continue
        zs.append(_mann_whitney_z(g, h))
        weights.append(len(h))
    if not zs:
        return CopyingTest(float("nan"), float("nan"), float("nan"), 0)
    w = torch.tensor(weights, dtype=torch.float64)
    w = w / w.sum()
    z_cells = torch.tensor(zs, dtype=torch.float64)
    ct = float((w * z_cells).sum())
    z = ct / float(w.pow(2).sum().sqrt())
    p = 0.5 * math.erfc(-z / math.sqrt(2))  # P(Z <= z): small when samples sit too close
    return CopyingTest(ct, z, p, len(zs))


def memorization_report(
    train_features: Tensor,
    generated_features: Tensor,
    heldout_features: Tensor,
    train_pixels: Tensor | None = None,
    generated_pixels: Tensor | None = None,
    heldout_pixels: Tensor | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """The audit's numbers (``memorization/...``), in feature space and, when images are
    given, in pixel space."""
    if len(generated_features) < MIN_SAMPLES:
        raise DataError(
            f"the memorization audit got {len(generated_features)} samples, but needs >= "
            f"{MIN_SAMPLES} (a data-copying cell is scored with 5): use more samples."
        )
    results: dict[str, float] = {}
    spaces = [("features", train_features, generated_features, heldout_features)]
    if train_pixels is not None and generated_pixels is not None and heldout_pixels is not None:
        spaces.append(("pixels", train_pixels, generated_pixels, heldout_pixels))
    for space, train, gen, held in spaces:
        for x, what in ((train, "training"), (gen, "generated"), (held, "held-out")):
            require_finite(x, f"{what} {space}")  # no distance on NaN: it would pick any image
        gen_d, held_d = nearest(gen, train)[0], nearest(held, train)[0]
        threshold = torch.quantile(held_d, 0.05)
        results[f"memorization/{space}_nn_generated"] = float(gen_d.median())
        results[f"memorization/{space}_nn_heldout"] = float(held_d.median())
        results[f"memorization/{space}_closer_than_heldout"] = float(
            (gen_d < threshold).float().mean()
        )
    test = data_copying_test(train_features, generated_features, heldout_features, seed=seed)
    results.update(
        {
            "memorization/copying_ct": test.ct,
            "memorization/copying_z": test.z,
            "memorization/copying_p": test.p,
            "memorization/copying_cells": float(test.cells_used),
        }
    )
    return results


def closest_pairs(
    generated: Tensor, train: Tensor, pairs: int = 16, chunk: int = 2048
) -> tuple[Tensor, Tensor]:
    """The ``pairs`` generated images nearest (in pixels) to a training image, and those
    training images: the contact sheet's two rows."""
    dist, index = nearest(generated, train, chunk)
    order = dist.argsort()[:pairs]
    return generated[order], train[index[order]]

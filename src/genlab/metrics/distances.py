"""Euclidean nearest neighbours that measure an exact copy at distance 0 on every BLAS.

The fast form ``|q|^2 - 2 q.r + |r|^2`` is one matmul per chunk, but in float32 it cancels
catastrophically: two identical MNIST images come out ~0.003 apart, by an amount that depends
on the BLAS and the thread count. So the matmul only *shortlists* a few rows per query; their
distances are then recomputed from the differences ``||q - r||``, which are exactly 0 for
identical rows, and the shortlist is re-ranked on them (near-ties the matmul got in the wrong
order come out right too).
"""

from __future__ import annotations

import torch
from torch import Tensor

# Rows shortlisted per query beyond the k wanted: the matmul's error only swaps rows whose
# distances are nearly equal, so a few spare ones hold the true neighbours.
SPARE_CANDIDATES = 3


def shortlist(block: Tensor, reference: Tensor, offset: Tensor, count: int) -> Tensor:
    """Per ``block`` row, the indices of the ``count`` reference rows ``j`` with the smallest
    ``offset[j] - 2 q.r_j``. With ``offset = |r|^2`` these are the nearest rows: the missing
    ``|q|^2`` is the same along a row, so it cannot change the order (and costs a pass)."""
    scores = torch.addmm(offset, block, reference.T, alpha=-2)
    return scores.topk(min(count, len(reference)), dim=1, largest=False).indices


def exact_distances(query: Tensor, reference: Tensor, index: Tensor) -> Tensor:
    """``||query[i] - reference[index[i, j]]||`` for every ``(i, j)``, from the differences:
    identical rows give exactly 0. One column at a time: memory of one ``query``-sized block."""
    return torch.stack(
        [(query - reference[index[:, j]]).norm(dim=1) for j in range(index.shape[1])], dim=1
    )


def nearest_k(
    query: Tensor, reference: Tensor, k: int = 1, chunk: int = 2048
) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest ``reference`` rows of each ``query`` row, nearest first: distances
    ``[M, k]`` (recomputed exactly) and their row indices ``[M, k]``."""
    query, reference = query.flatten(1).float(), reference.flatten(1).float()
    k = min(k, len(reference))
    reference_sq = reference.pow(2).sum(1)
    dists, indices = [], []
    for block in query.split(chunk):
        candidates = shortlist(block, reference, reference_sq, k + SPARE_CANDIDATES)
        exact, order = exact_distances(block, reference, candidates).sort(dim=1, stable=True)
        dists.append(exact[:, :k])
        indices.append(candidates.gather(1, order)[:, :k])
    return torch.cat(dists), torch.cat(indices)

"""The memorization audit flags a generator that returns training images, and only that one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from genlab.metrics.memorization import memorization_report, nearest
from genlab.metrics.scores import precision_recall


def _mixture(n: int, generator: torch.Generator, means: torch.Tensor) -> torch.Tensor:
    centre = torch.randint(0, len(means), (n,), generator=generator)
    return means[centre] + torch.randn(n, means.shape[1], generator=generator)


def test_nearest_matches_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    query, reference = torch.randn(37, 5, generator=g), torch.randn(101, 5, generator=g)
    dist, index = nearest(query, reference, chunk=8)
    brute = torch.cdist(query, reference)
    torch.testing.assert_close(dist, brute.min(1).values, atol=1e-4, rtol=0)
    assert torch.equal(index, brute.argmin(1))


def test_nearest_measures_a_copy_at_exactly_zero() -> None:
    # Far from the origin the matmul form |q|^2 - 2q.r + |r|^2 cancels badly in float32 (it
    # gave ~1 here, and ~0.02 on plain [0, 1] images): copies must still measure 0 exactly,
    # since they are recomputed from the difference, which no BLAS can round.
    g = torch.Generator().manual_seed(0)
    reference = 50 + torch.rand(300, 1, 28, 28, generator=g)
    picked = torch.randperm(300, generator=g)[:100]
    dist, index = nearest(reference[picked], reference, chunk=32)
    assert torch.equal(dist, torch.zeros(100)) and torch.equal(index, picked)


def test_nearest_orders_near_ties_by_the_exact_distance() -> None:
    # Rows i and i + 200 are 0.01 apart; each query sits 0.003 from row i. The matmul form
    # picked row i + 200 for some queries; the exact re-ranking never does.
    g = torch.Generator().manual_seed(0)
    base = 100 + torch.rand(200, 64, generator=g)
    step = torch.zeros(64)
    step[0] = 0.01
    dist, index = nearest(base + 0.3 * step, torch.cat([base, base + step]))
    assert torch.equal(index, torch.arange(200))
    torch.testing.assert_close(dist, torch.full((200,), 0.003), rtol=0.02, atol=0)


def test_precision_recall_match_exact_distances() -> None:
    # A generator collapsed onto 20 training images (4 copies each, so its balls have radius
    # 0): recall is exactly those 20 of 200, and the exact distances agree with float64 ones.
    g = torch.Generator().manual_seed(0)
    real = 30 + torch.rand(200, 128, generator=g)
    fake = real[:20].repeat(4, 1)[torch.randperm(80, generator=g)]
    assert precision_recall(real, fake, chunk=64) == pytest.approx((1.0, 0.1), abs=1e-6)
    fake = 30 + 1.2 * torch.rand(150, 128, generator=g)

    def inside(points: torch.Tensor, centres: torch.Tensor) -> float:
        d = torch.cdist(
            centres.double(), centres.double(), compute_mode="donot_use_mm_for_euclid_dist"
        )
        radii = d.topk(4, dim=1, largest=False).values[:, -1]
        to_centres = torch.cdist(
            points.double(), centres.double(), compute_mode="donot_use_mm_for_euclid_dist"
        )
        return float((to_centres <= radii).any(1).double().mean())

    precision, recall = precision_recall(real, fake, chunk=64)
    assert (precision, recall) == pytest.approx((inside(fake, real), inside(real, fake)), abs=1e-9)


def test_copier_is_flagged_and_a_fresh_sample_is_not() -> None:
    g = torch.Generator().manual_seed(0)
    means = torch.randn(10, 16, generator=g) * 4
    train, heldout, fresh = (_mixture(n, g, means) for n in (3000, 600, 600))
    copier = train[torch.randperm(3000, generator=g)[:600]] + 0.01 * torch.randn(600, 16)
    copied = memorization_report(train, copier, heldout)
    honest = memorization_report(train, fresh, heldout)
    assert copied["memorization/copying_ct"] < -3 and copied["memorization/copying_p"] < 1e-3
    assert copied["memorization/features_closer_than_heldout"] > 0.9
    assert honest["memorization/copying_ct"] > -3 and honest["memorization/copying_p"] > 0.01
    assert honest["memorization/features_closer_than_heldout"] < 0.15


@pytest.fixture(scope="module")
def mnist_subsets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """1000 training images of a 5% MNIST subset (a perfect copier) and 1000 validation
    images (real, never trained on), as sample files."""
    from genlab.data.mnist import MNISTDataModule
    from tests.conftest import SHIPPED

    dm = MNISTDataModule(data_dir=str(SHIPPED), batch_size=64, num_workers=0, train_fraction=0.05)
    dm.prepare_data()
    dm.setup("fit")
    out = tmp_path_factory.mktemp("memorization")
    files = {}
    for name, dataset in (("copier", dm.train_set), ("heldout", dm.val_set)):
        images = torch.stack([dataset[i][0] for i in range(1000)])
        files[name] = out / f"{name}.npy"
        np.save(files[name], images.numpy())
    return files


@pytest.mark.parametrize(("source", "copies"), [("copier", True), ("heldout", False)])
def test_eval_audit_on_sample_files(make_cfg, mnist_subsets, source: str, copies: bool) -> None:
    from genlab import evaluate

    cfg = make_cfg(
        f"samples={mnist_subsets[source]}",
        "data=mnist",
        "data.train_fraction=0.05",
        "metrics=[memorization]",
        config_name="eval",
    )
    results = evaluate.run(cfg)
    ct = results["memorization/copying_ct"]
    assert (ct < -3) == copies, results
    if copies:  # every sample is a training image: distance exactly 0 in pixels, any BLAS
        assert results["memorization/pixels_nn_generated"] == 0.0
        assert results["memorization/pixels_closer_than_heldout"] == 1.0
    sheet = Path(cfg.paths.output_dir) / "memorization_pairs.png"
    assert sheet.read_bytes()[:4] == b"\x89PNG"

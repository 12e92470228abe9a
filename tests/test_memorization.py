"""The memorization audit flags a generator that returns training images, and only that one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from genlab.metrics.memorization import memorization_report, nearest


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
    if copies:  # every sample is a training image: distance 0 in both spaces
        assert results["memorization/pixels_nn_generated"] == pytest.approx(0, abs=1e-3)
        assert results["memorization/pixels_closer_than_heldout"] == 1.0
    sheet = Path(cfg.paths.output_dir) / "memorization_pairs.png"
    assert sheet.read_bytes()[:4] == b"\x89PNG"

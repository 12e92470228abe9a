"""Sanity of the evaluation metrics on real MNIST subsets (the shipped files), on the CPU."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from genlab.data.mnist import MNISTDataModule
from genlab.errors import ConfigError, GenlabError
from genlab.metrics import feature_sets
from genlab.metrics.feature_sets import extract, real_features, split_images
from genlab.metrics.features import InceptionFeatures, MNISTClassifierFeatures
from genlab.metrics.scores import (
    class_coverage,
    frechet_distance,
    inception_score,
    kernel_distance,
    precision_recall,
    score,
)

from .conftest import SHIPPED


@pytest.fixture(scope="module")
def features() -> MNISTClassifierFeatures:
    return MNISTClassifierFeatures()


@pytest.fixture(scope="module")
def mnist() -> MNISTDataModule:
    dm = MNISTDataModule(data_dir=str(SHIPPED))
    dm.prepare_data()
    dm.setup()
    return dm


def _images_and_labels(dataset, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([dataset[i][0] for i in range(n)]), dataset.labels[:n]


def test_shipped_classifier_is_accurate(features, mnist) -> None:
    images, labels = _images_and_labels(mnist.test_set, 2000)
    feats, logits = extract(features, images.split(500))
    assert feats.shape == (2000, 128) and logits.shape == (2000, 10)
    assert (logits.argmax(1) == labels).float().mean() >= 0.99
    assert features.test_accuracy >= 0.99  # recorded by scripts/train_mnist_classifier.py


def test_fid_ranks_real_blurred_and_noise(features, mnist) -> None:
    test, _ = _images_and_labels(mnist.test_set, 1000)
    val, _ = _images_and_labels(mnist.val_set, 1000)
    blurred = F.interpolate(F.avg_pool2d(val, 4), size=28, mode="bilinear")
    noise = torch.rand_like(val)
    real = extract(features, [test])
    fid = {name: frechet_distance(real[0], extract(features, [x])[0])
           for name, x in (("real", val), ("blurred", blurred), ("noise", noise))}  # fmt: skip
    assert fid["real"] * 10 < fid["blurred"] < fid["noise"], fid
    kid_real, _ = kernel_distance(real[0], extract(features, [val])[0], subset_size=500)
    kid_noise, _ = kernel_distance(real[0], extract(features, [noise])[0], subset_size=500)
    assert abs(kid_real) * 10 < kid_noise


def test_mode_collapse_scores_worse(features, mnist) -> None:
    balanced, _ = _images_and_labels(mnist.val_set, 1000)
    images, labels = _images_and_labels(mnist.val_set, 5000)
    ones = images[labels == 1][:500]  # one class only: total mode collapse
    real = extract(features, [_images_and_labels(mnist.test_set, 1000)[0]])
    good = score(real, extract(features, [balanced]), ["is", "pr", "coverage"])
    collapsed = score(real, extract(features, [ones]), ["is", "pr", "coverage"])
    assert good["classes_covered"] == 10 and collapsed["classes_covered"] == 1
    assert good["class_kl"] < 0.05 < 2.0 < collapsed["class_kl"]
    assert collapsed["recall"] < 0.5 * good["recall"]
    assert good["precision"] > 0.6 and good["recall"] > 0.6
    assert good["is"] > 8.5 and collapsed["is"] < 1.5  # IS with the digit classifier: max 10


def test_scores_on_synthetic_features() -> None:
    torch.manual_seed(0)
    a, b = torch.randn(2000, 8), torch.randn(2000, 8)
    assert frechet_distance(a, b) < 0.1 < 10 < frechet_distance(a, b + 3)
    precision, recall = precision_recall(a, b * 0.2)  # a narrow subset of a's support
    assert precision > 0.95 and recall < 0.3
    uniform_logits = torch.eye(10).repeat(50, 1) * 30  # confident and evenly spread
    assert inception_score(uniform_logits, splits=1)[0] == pytest.approx(10, rel=1e-3)
    assert class_coverage(uniform_logits)["class_kl"] == pytest.approx(0, abs=1e-9)


def test_real_features_are_cached(features, mnist, tmp_path: Path, monkeypatch) -> None:
    calls = []
    original = feature_sets.extract
    monkeypatch.setattr(
        feature_sets, "extract", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    first = real_features(mnist, "test", features, tmp_path, num_images=300)
    second = real_features(mnist, "test", features, tmp_path, num_images=300)
    assert len(calls) == 1 and torch.equal(first[0], second[0])
    assert len(list(tmp_path.glob("mnist-test-300x1x28x28-mnist_classifier-*.pt"))) == 1
    # Another split, count or resolution is another key.
    real_features(mnist, "val", features, tmp_path, num_images=300)
    real_features(mnist, "test", features, tmp_path, num_images=200)
    small = MNISTDataModule(data_dir=str(SHIPPED), image_size=32)
    real_features(small, "test", features, tmp_path, num_images=200)
    assert len(calls) == 4 and len(list(tmp_path.glob("*.pt"))) == 4


def test_real_features_reject_training_split(features, mnist) -> None:
    with pytest.raises(ConfigError, match="split='train'"):
        split_images(mnist, "train")


def test_inception_offline_without_weights_explains(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("GENLAB_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # no cached weights

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(
        "torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url", offline
    )
    with pytest.raises(GenlabError, match=r"features\.weights=.*features=mnist_classifier"):
        InceptionFeatures()
    with pytest.raises(ConfigError, match="does not exist"):
        InceptionFeatures(weights=tmp_path / "missing.pth")
    monkeypatch.setenv("GENLAB_INCEPTION_WEIGHTS", str(tmp_path / "also_missing.pth"))
    with pytest.raises(ConfigError, match="GENLAB_INCEPTION_WEIGHTS"):
        InceptionFeatures()


def test_binarized_mnist(mnist) -> None:
    dm = MNISTDataModule(data_dir=str(SHIPPED), binarize=True)
    dm.setup()
    x1, x2 = dm.train_set[0][0], dm.train_set[0][0]
    assert set(x1.unique().tolist()) <= {0.0, 1.0} and not torch.equal(x1, x2)  # redrawn
    again = MNISTDataModule(data_dir=str(SHIPPED), binarize=True)
    again.setup("test")
    assert set(dm.test_set[3][0].unique().tolist()) == {0.0, 1.0}
    assert torch.equal(dm.test_set.images, again.test_set.images)  # one fixed test set
    grey = mnist.test_set[3][0]
    assert (dm.test_set[3][0] - grey).abs().mean() < 0.1  # binarized, not replaced


def test_iwae_bound_is_above_elbo_and_tightens_with_k(make_cfg, mnist) -> None:
    from hydra.utils import instantiate

    torch.manual_seed(0)
    vae = instantiate(make_cfg("model=vae").model).eval()
    x = _images_and_labels(mnist.test_set, 64)[0]

    def elbo() -> torch.Tensor:
        log_px, kl, _ = vae.elbo_terms(x)
        return (log_px - kl).mean()

    with torch.no_grad():
        elbo = torch.stack([elbo() for _ in range(20)]).mean()
        iwae = {k: torch.stack([vae.iwae_bound(x, k).mean() for _ in range(5)]).mean()
                for k in (1, 5, 50)}  # fmt: skip
    assert iwae[1] == pytest.approx(float(elbo), rel=0.01)  # k = 1 is the ELBO
    assert elbo < iwae[5] < iwae[50]


def test_non_finite_features_are_one_error_not_a_crash() -> None:
    """A diverged model's NaN features never reach the matrix routines (FID's used to kill
    the process: oneMKL DGEBAL, exit 139)."""
    real, fake = torch.randn(50, 8), torch.randn(50, 8)
    fake[7, 2] = float("nan")
    logits = torch.randn(50, 10)
    logits[1, 0] = float("inf")
    for compute in (
        lambda: frechet_distance(real, fake),
        lambda: kernel_distance(real, fake),
        lambda: precision_recall(real, fake),
        lambda: inception_score(logits),
        lambda: class_coverage(logits),
        lambda: score((real, logits.nan_to_num()), (fake, logits.nan_to_num())),
    ):
        with pytest.raises(GenlabError, match=r"hold NaN/Inf in 1 of 50 rows \(first: row"):
            compute()
    with pytest.raises(GenlabError, match=r"the features of samples=x.npy hold NaN/Inf"):
        score((real, torch.randn(50, 10)), (fake, torch.randn(50, 10)), ["kid"],
              sources=("the test images", "samples=x.npy"))  # fmt: skip


def test_too_few_rows_for_a_metric_is_one_error() -> None:
    real, logits = torch.randn(50, 8), torch.randn(50, 10)
    few = torch.randn(3, 8)
    with pytest.raises(GenlabError, match=r"3 rows, but pr needs >= 4"):
        precision_recall(real, few)
    with pytest.raises(GenlabError, match=r"1 rows, but fid needs >= 2"):
        frechet_distance(real, few[:1])
    with pytest.raises(GenlabError, match=r"is needs >= 10 \(one per split\)"):
        inception_score(logits[:5])
    with pytest.raises(GenlabError, match=r"samples=x.npy: 3 images are too few: is needs >= 10"):
        score((real, logits), (few, logits[:3]), ["fid", "is"], sources=("real", "samples=x.npy"))

"""Class-conditional metrics (metrics/conditional.py): conditional accuracy, intra-class FID and
per-class precision/recall, as pure functions on synthetic features, on real MNIST through the
shipped classifier (a model that returns real images of the requested classes against one that
ignores its labels), and through eval.py (``metrics=[...,cond_acc,intra_fid,class_pr]``)."""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from genlab import evaluate
from genlab.data.mnist import MNISTDataModule
from genlab.errors import ConfigError, DataError
from genlab.metrics import feature_sets
from genlab.metrics.conditional import (
    balanced_labels,
    check_classifier,
    check_conditional,
    conditional_accuracy,
    conditional_score,
    intra_fid,
    too_few_per_class,
)
from genlab.metrics.feature_sets import (
    generated_features,
    labelled_real_features,
    real_features,
    split_items,
)
from genlab.metrics.features import MNISTClassifierFeatures
from genlab.metrics.names import CONDITIONAL_METRICS, conditional_keys
from genlab.metrics.scores import frechet_distance, score

from .conftest import SHIPPED, ClassOracle

ALL = list(CONDITIONAL_METRICS)  # cond_acc, intra_fid, class_pr


# --- pure functions on synthetic features ------------------------------------------------------


def _clusters(labels: torch.Tensor, means: torch.Tensor, seed: int) -> torch.Tensor:
    """One Gaussian per class around ``means[c]``."""
    noise = torch.randn(len(labels), means.shape[1], generator=torch.Generator().manual_seed(seed))
    return means[labels] + noise


def _synthetic(classes: int = 4, per_class: int = 300, shuffle: bool = False):
    """Real and generated (features, logits, labels) of ``classes`` well-separated Gaussians;
    ``shuffle``: each sample is of a random class, whatever it was asked for."""
    means = torch.randn(classes, 6, generator=torch.Generator().manual_seed(0)) * 4
    real_labels = torch.arange(classes).repeat(200)
    real = (_clusters(real_labels, means, 1), torch.zeros(len(real_labels), classes), real_labels)
    asked = balanced_labels(classes, classes * per_class)
    drawn = asked[torch.randperm(len(asked), generator=torch.Generator().manual_seed(2))]
    truth = drawn if shuffle else asked  # the class each sample really is
    logits = torch.nn.functional.one_hot(truth, classes).float() * 5  # a perfect classifier
    return real, (_clusters(truth, means, 3), logits, asked)


def test_balanced_labels_ask_every_class_equally() -> None:
    assert balanced_labels(3, 9).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert balanced_labels(3, 10).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # remainder dropped
    assert too_few_per_class(ALL, 3) == [
        "class_pr needs >= 4 per class (each sample's 3 nearest other samples of its class)"
    ]
    assert too_few_per_class(ALL, 4) == []


def test_conditional_accuracy_counts_the_requested_class() -> None:
    logits = torch.tensor([[5.0, 0, 0], [0, 5, 0], [0, 5, 0], [0, 5, 0], [0, 0, 5], [5, 0, 0]])
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    accuracy, per_class = conditional_accuracy(logits, labels)
    assert accuracy == pytest.approx(4 / 6)
    assert per_class == pytest.approx([0.5, 1.0, 0.5])


def test_scores_separate_a_conditional_model_from_one_that_ignores_labels() -> None:
    real, good = _synthetic()
    _, ignorer = _synthetic(shuffle=True)
    on_good = conditional_score(real, good, ALL, 4)
    on_ignorer = conditional_score(real, ignorer, ALL, 4)
    # Declared keys, exactly: each mean and one value per class.
    assert sorted(on_good) == sorted(conditional_keys(ALL, 4))
    assert "intra_fid/3" in on_good and "class_recall/0" in on_good
    assert on_good["cond_acc"] == 1.0 and on_ignorer["cond_acc"] < 0.4
    assert on_good["intra_fid"] < 1 and on_ignorer["intra_fid"] > 50 * on_good["intra_fid"]
    assert on_good["class_precision"] > 0.8 and on_ignorer["class_precision"] < 0.4
    # The per-class values are the existing metrics within one class; the key is their mean.
    real_feats, _, real_labels = real
    fake_feats, _, asked = good
    fid_2 = frechet_distance(real_feats[real_labels == 2], fake_feats[asked == 2])
    assert on_good["intra_fid/2"] == pytest.approx(fid_2)
    mean, values = intra_fid(real_feats, real_labels, fake_feats, asked, 4)
    assert on_good["intra_fid"] == pytest.approx(mean) == pytest.approx(sum(values) / 4)
    # Only what is asked for.
    assert sorted(conditional_score(real, good, ["cond_acc"], 4)) == conditional_keys(
        ["cond_acc"], 4
    )


def test_pure_functions_refuse_what_they_cannot_score_with_one_line() -> None:
    real, good = _synthetic()
    feats, logits, labels = real
    few = torch.zeros_like(labels)  # class 0, but for one image of each other class
    few[1:4] = torch.tensor([1, 2, 3])
    cases = {
        "a class with one real image": (
            lambda: conditional_score((feats, logits, few), good, ["intra_fid"], 4),
            DataError,
            r"intra_fid needs >= 2 real images per class .* 3 of the 4 classes have fewer "
            r"\(class 1: 1, class 2: 1, class 3: 1\)",
        ),
        "real images without classes": (
            lambda: conditional_score(
                (feats, logits, torch.full_like(labels, -1)), good, ["class_pr"], 4
            ),
            DataError,
            r"carry no classes \(every label is -1\)",
        ),
        "a classifier of other classes": (
            lambda: conditional_score(
                real, (good[0], torch.zeros(len(good[0]), 12), good[2]), ["cond_acc"], 4
            ),
            ConfigError,
            r"tells 12 classes apart and the model is conditioned on 4",
        ),
        "NaN features": (
            lambda: conditional_score(real, (good[0] * float("nan"), *good[1:]), ["intra_fid"], 4),
            DataError,
            r"hold NaN/Inf in 1200 of 1200 rows",
        ),
    }
    for case, (compute, kind, message) in cases.items():
        with pytest.raises(kind, match=message) as err:
            compute()
        assert "\n" not in str(err.value), case
    with pytest.raises(ConfigError, match=r"features=inception's .* tells 1008 classes apart"):
        check_classifier(1008, 10, "features=inception")
    check_classifier(10, 10)
    check_classifier(None, 10)  # a net that does not say: checked on its logits later


def test_unconditional_models_and_sample_files_are_refused() -> None:
    class Unconditional:
        num_classes = 0

    with pytest.raises(ConfigError) as err:
        check_conditional(["fid", "intra_fid", "class_pr"], Unconditional(), "ckpt_path=a.ckpt")
    text = str(err.value)
    assert "\n" not in text and "intra_fid, class_pr" in text
    assert "ckpt_path=a.ckpt is an unconditional Unconditional (num_classes=0)" in text
    with pytest.raises(ConfigError, match=r"samples=x.npy is a file of samples without their"):
        check_conditional(["cond_acc"], None, "samples=x.npy")
    assert check_conditional(["fid", "kid"], Unconditional(), "ckpt_path=a.ckpt") == []


# --- real MNIST through the shipped classifier -------------------------------------------------


@pytest.fixture(scope="module")
def features() -> MNISTClassifierFeatures:
    return MNISTClassifierFeatures()


@pytest.fixture(scope="module")
def mnist() -> MNISTDataModule:
    dm = MNISTDataModule(data_dir=str(SHIPPED))
    dm.prepare_data()
    dm.setup("test")
    return dm


@pytest.fixture(scope="module")
def oracles(mnist) -> dict[str, ClassOracle]:
    """Test images 2000-3999 of the requested classes (the oracle), or of random classes."""
    images, labels = split_items(mnist, "test", 4000)
    images, labels = images[2000:], labels[2000:]
    return {
        "oracle": ClassOracle(images, labels),
        "ignores_labels": ClassOracle(images, labels, ignore_labels=True),
    }


def test_oracle_scores_high_and_a_model_ignoring_labels_does_not(features, mnist, oracles) -> None:
    real = labelled_real_features(mnist, "test", features, None, num_images=2000)
    labels = balanced_labels(10, 1000)
    fake = {
        name: generated_features(model, features, len(labels), seed=0, labels=labels)
        for name, model in oracles.items()
    }
    scores = {name: conditional_score(real, (*f, labels), ALL, 10) for name, f in fake.items()}
    oracle, ignorer = scores["oracle"], scores["ignores_labels"]
    assert oracle["cond_acc"] > 0.97  # measured 0.993: the classifier's own error
    assert 0.05 < ignorer["cond_acc"] < 0.16  # chance: one class in ten (measured 0.09)
    assert oracle["intra_fid"] < 2  # measured 0.68
    assert ignorer["intra_fid"] > 20 * oracle["intra_fid"]  # measured 67
    assert all(oracle[f"intra_fid/{c}"] < ignorer[f"intra_fid/{c}"] for c in range(10))
    assert oracle["class_precision"] > 0.7 > 0.2 > ignorer["class_precision"]
    # Plain FID cannot tell them apart: both draw real digits of every class.
    fid = {name: frechet_distance(real[0], f[0]) for name, f in fake.items()}
    assert fid["ignores_labels"] < 2 and ignorer["intra_fid"] > 10 * fid["ignores_labels"]


def test_real_labels_are_cached_with_the_features(
    features, mnist, tmp_path: Path, monkeypatch, caplog
) -> None:
    calls = []
    original = feature_sets.extract
    monkeypatch.setattr(
        feature_sets, "extract", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    first = labelled_real_features(mnist, "test", features, tmp_path, num_images=300)
    second = labelled_real_features(mnist, "test", features, tmp_path, num_images=300)
    assert len(calls) == 1 and torch.equal(first[2], mnist.test_set.labels[:300])
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    unlabelled = real_features(mnist, "test", features, tmp_path, num_images=300)  # same file
    assert len(calls) == 1 and torch.equal(unlabelled[0], first[0])
    # A file of the old format (no labels) under the name is moved aside and rebuilt.
    (path,) = tmp_path.glob("mnist-test-300x1x28x28-*.pt")
    stored = torch.load(path, weights_only=True)
    torch.save({k: v for k, v in stored.items() if k != "labels"}, path)
    with caplog.at_level(logging.WARNING):
        healed = labelled_real_features(mnist, "test", features, tmp_path, num_images=300)
    assert "its labels are not 300 int64 classes" in caplog.text
    assert len(calls) == 2 and torch.equal(healed[2], first[2])


# --- eval.py -----------------------------------------------------------------------------------


@functools.cache
def _gan(classes: int):
    """An untrained tiny GAN, conditional on ``classes`` classes (0: unconditional)."""
    from genlab.models.gan import GAN
    from genlab.nets.conv import ConvDecoder, ConvEncoder

    torch.manual_seed(0)
    nets = {"num_classes": classes} if classes else {}
    return GAN(
        generator=ConvDecoder(latent_dim=8, width=8, **nets),
        discriminator=ConvEncoder(width=8, **nets),
        optimizer=functools.partial(torch.optim.Adam, lr=1e-3),
        latent_dim=8,
        **nets,
    ).eval()


def _eval(monkeypatch, make_cfg, model, *overrides: str) -> tuple[dict[str, float], DictConfig]:
    """``evaluate.run`` on ``model`` as if loaded from ckpt_path=model.ckpt (MNIST's test
    images as the real ones), and the config it ran with."""
    stored = OmegaConf.create({"data": {"image_size": 28, "channels": 1}})
    monkeypatch.setattr(evaluate, "load_model", lambda path, trust=False: (model, stored))
    source = [] if any(o.startswith("samples=") for o in overrides) else ["ckpt_path=model.ckpt"]
    cfg = make_cfg(
        *source,
        "data=mnist",
        "trainer=cpu",
        "extras.print_config=false",
        *overrides,
        config_name="eval",
    )
    return evaluate.run(cfg), cfg


def test_eval_scores_a_conditional_model(monkeypatch, make_cfg, oracles) -> None:
    results, cfg = _eval(
        monkeypatch,
        make_cfg,
        oracles["oracle"],
        "metrics=[fid,cond_acc,intra_fid,class_pr]",
        "num_samples=505",
    )
    out = Path(cfg.paths.output_dir)
    expected = {f"test/{k}" for k in conditional_keys(ALL, 10)} | {"test/fid"}
    assert set(results) == expected
    assert results["test/cond_acc"] > 0.97 and results["test/intra_fid"] < 5
    info = json.loads((out / "metrics.json").read_text())
    assert info["conditional_samples_per_class"] == 50 and info["conditional_num_samples"] == 500
    assert info["num_samples"] == 505 and sum(info["real_per_class"]) == 10000
    assert "test/intra_fid/9" in (out / "metrics.csv").read_text()


def test_eval_refuses_conditional_metrics_it_cannot_compute(
    monkeypatch, make_cfg, oracles, tmp_path: Path
) -> None:
    def refused(model, message: str, *overrides: str) -> None:
        with pytest.raises(ConfigError, match=message) as err:
            _eval(monkeypatch, make_cfg, model, *overrides)
        assert "\n" not in str(err.value)

    # An unconditional model: one line naming the model and the metric, even beside fid.
    refused(
        _gan(0),
        r"metrics=\[intra_fid\] need a class-conditional model, but "
        r"ckpt_path=model.ckpt is an unconditional GAN",
        "metrics=[fid,intra_fid]",
    )
    # A classifier of 1008 ImageNet classes for a 10-class model: before Inception is loaded.
    refused(
        oracles["oracle"],
        r"features=inception's predicted class .* 1008 classes",
        "metrics=[cond_acc]",
        "features=inception",
    )
    refused(
        oracles["oracle"],
        r"num_samples=30 gives 3 samples to each of the model's 10 "
        r"classes, too few: class_pr needs >= 4 per class",
        "metrics=[class_pr]",
        "num_samples=30",
    )
    np.save(tmp_path / "x.npy", np.zeros((20, 1, 28, 28), np.float32))
    refused(
        oracles["oracle"],
        r"samples=.*x.npy is a file of samples without their classes",
        f"samples={tmp_path / 'x.npy'}",
        "metrics=[fid,cond_acc]",
    )


def test_eval_of_a_conditional_model_with_the_old_metrics_is_unchanged(
    monkeypatch, make_cfg, features, mnist
) -> None:
    """fid and coverage on a conditional GAN: samples of uniform classes, the same numbers as
    the scoring functions give on them."""
    model = _gan(10)
    results, cfg = _eval(monkeypatch, make_cfg, model, "metrics=[fid,coverage]", "num_samples=40")
    assert set(results) == {"test/fid", "test/class_kl", "test/classes_covered"}
    real = real_features(mnist, "test", features, cfg.paths.cache_dir)  # eval's, cached
    fake = generated_features(model, features, 40, seed=42, batch_size=500)  # eval's seed
    expected = score(real, fake, ["fid", "coverage"])
    assert results["test/fid"] == pytest.approx(expected["fid"], rel=1e-6)
    assert results["test/class_kl"] == pytest.approx(expected["class_kl"], rel=1e-6)

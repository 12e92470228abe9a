"""Metric producers declare the keys they log, and the monitor check, the sweep table and the
contract read those declarations: here each declaration is checked against what its producer
really logs or returns."""

from __future__ import annotations

import pytest
import torch

from genlab.callbacks.fid import FIDMonitor
from genlab.errors import ConfigError
from genlab.metrics.conditional import conditional_score
from genlab.metrics.names import (
    CONDITIONAL_KEYS,
    CONDITIONAL_METRICS,
    DETAIL_KEYS,
    SAMPLE_METRICS,
    SCORE_KEYS,
    conditional_keys,
    score_keys,
)
from genlab.metrics.scores import score
from genlab.sweeps import TABLE_METRICS
from genlab.train import callback_metrics, check_monitor_source


def test_declared_score_keys_are_what_score_returns() -> None:
    generator = torch.Generator().manual_seed(0)
    real = (torch.randn(40, 8, generator=generator), torch.randn(40, 10, generator=generator))
    fake = (torch.randn(40, 8, generator=generator), torch.randn(40, 10, generator=generator))
    for metric in SAMPLE_METRICS:
        scores = score(real, fake, [metric], kid_subset_size=20)
        scalars = [k for k, v in scores.items() if isinstance(v, (int, float))]
        assert scalars == list(SCORE_KEYS[metric]), metric
    assert set(score_keys(SAMPLE_METRICS)) >= DETAIL_KEYS


def test_declared_conditional_keys_are_what_conditional_score_returns() -> None:
    generator = torch.Generator().manual_seed(0)
    classes = 3
    labels = torch.arange(classes).repeat(10)

    def labelled() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return torch.randn(30, 8, generator=generator), torch.randn(30, classes), labels

    real, fake = labelled(), labelled()
    for metric in CONDITIONAL_METRICS:
        scores = conditional_score(real, fake, [metric], classes)
        assert list(scores) == conditional_keys([metric], classes), metric
        assert [k for k in scores if "/" not in k] == list(CONDITIONAL_KEYS[metric])
    assert conditional_keys(["intra_fid"], 2) == ["intra_fid", "intra_fid/0", "intra_fid/1"]
    # Their own names and keys: the FID callback, the monitor check and the sweep table, which
    # read SCORE_KEYS, are untouched.
    assert not set(CONDITIONAL_METRICS) & set(SAMPLE_METRICS)
    assert not set(conditional_keys(CONDITIONAL_METRICS, classes)) & set(score_keys(SAMPLE_METRICS))


def test_fid_callback_declares_its_keys_by_setting() -> None:
    assert FIDMonitor.logged_metrics({"metrics": ["fid", "pr"]}) == (
        "val/fid",
        "val/precision",
        "val/recall",
        "val/fid_seconds",
    )
    # Without `metrics`, the constructor's default.
    assert "val/kid" in FIDMonitor.logged_metrics({})
    assert FIDMonitor.metric_logging("val/recall") == "pr"
    assert FIDMonitor.metric_logging("val/kid_std") == "kid"
    assert FIDMonitor.metric_logging("val/d_loss") is None
    assert FIDMonitor.metric_logging("test/fid") is None  # test keys are no monitor


def test_train_reads_the_declarations(make_cfg) -> None:
    cfg = make_cfg("callbacks.fid.metrics=[fid,is]")
    logged = callback_metrics(cfg)
    assert {"val/fid", "val/is", "val/is_std", "val/fid_seconds"} <= set(logged)
    assert "val/kid" not in logged and "train/epsilon" not in logged
    private = make_cfg("privacy.enabled=true")
    assert "train/epsilon" in callback_metrics(private)  # DifferentialPrivacy.logged_metrics
    assert not [m for m in callback_metrics(make_cfg("callbacks.fid=null")) if "fid" in m]
    # A sample-quality monitor the configured callback does not log: one line naming the fix.
    with pytest.raises(ConfigError, match=r"add is to callbacks\.fid\.metrics"):
        check_monitor_source(make_cfg("model.monitor=val/is", "model.monitor_mode=max"))
    check_monitor_source(cfg.copy())  # val/fid, logged
    check_monitor_source(make_cfg("model.monitor=val/d_loss", "callbacks.fid=null"))  # the model's


def test_the_sweep_table_shows_declared_scores() -> None:
    # The same columns as always: the ranking scores of fid, kid, pr and coverage, then the
    # VAE's test metrics (IS and the details stay out of the table).
    assert TABLE_METRICS == (
        "fid", "kid", "precision", "recall", "class_kl", "nll_nats", "elbo", "ssim"
    )  # fmt: skip
    assert set(TABLE_METRICS) >= set(score_keys(["fid", "kid", "pr", "coverage"], details=False))

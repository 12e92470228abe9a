"""Sample-quality metrics during training: ``val/fid`` (the GAN monitor) and ``test/*``.

    python train.py callbacks.fid.every_n_epochs=2 callbacks.fid.num_samples=5000

After every ``every_n_epochs``-th validation epoch, ``num_samples`` seeded samples are scored
against the validation split (real features cached on disk, see ``metrics/feature_sets.py``)
and ``val/fid`` (plus ``val/kid`` etc. when listed in ``metrics``) and ``val/fid_seconds`` (the
cost) are logged. During
``trainer.test`` the ``test_metrics`` are computed on ``test_num_samples`` samples against the
test split. The same seed every epoch means epochs are compared on the same latents.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from genlab.metrics.feature_sets import Features, generated_features, real_features
from genlab.metrics.features import FeatureExtractor
from genlab.metrics.names import SAMPLE_METRICS, SCORE_KEYS, score_keys
from genlab.metrics.scores import MIN_SAMPLES, score

log = logging.getLogger(__name__)
VAL_METRICS = ("fid", "kid")  # the default `metrics`
COST = "fid_seconds"  # logged as <stage>/fid_seconds whenever the callback scores


class FIDMonitor(Callback):
    @staticmethod
    def logged_metrics(config: Mapping[str, Any]) -> tuple[str, ...]:
        """The keys the callback built from ``config`` (its node in ``callbacks``) logs during
        validation, which model.monitor may name: the scores of its ``metrics`` and the cost."""
        keys = (*score_keys(config.get("metrics", VAL_METRICS)), COST)
        return tuple(f"val/{key}" for key in keys)

    @staticmethod
    def metric_logging(key: str) -> str | None:
        """The ``metrics`` entry that makes the callback log ``key`` during validation ("pr"
        for val/precision); None for a key that no entry logs."""
        return next((m for m in SAMPLE_METRICS if key in [f"val/{k}" for k in SCORE_KEYS[m]]), None)

    def __init__(
        self,
        features: FeatureExtractor,
        every_n_epochs: int = 1,
        num_samples: int = 2000,
        metrics: tuple[str, ...] | list[str] = VAL_METRICS,
        test_num_samples: int = 10000,
        test_metrics: tuple[str, ...] | list[str] = SAMPLE_METRICS,
        num_real: int | None = None,
        cache_dir: str | Path | None = None,
        batch_size: int = 500,
        seed: int = 0,
    ) -> None:
        self.features = features
        self.every_n_epochs = every_n_epochs
        self.settings = {
            "val": (num_samples, list(metrics)),
            "test": (test_num_samples, list(test_metrics)),
        }
        self.num_real = num_real  # None: the whole split
        self.cache_dir = cache_dir
        self.batch_size = batch_size
        self.seed = seed
        self._real: dict[str, Features] = {}
        self._warned: set[tuple[str, tuple[str, ...]]] = set()

    def _real_features(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str
    ) -> Features:
        if split not in self._real:
            num_real = self.num_real
            if trainer.fast_dev_run:  # a smoke test of the code path, not a measurement
                num_real = min(num_real or 256, 256)
            self._real[split] = real_features(
                trainer.datamodule, split, self.features, self.cache_dir, num_real,
                self.batch_size, pl_module.device,
            )  # fmt: skip
        return self._real[split]

    def _score(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        num_samples, metrics = self.settings[stage]
        if trainer.fast_dev_run:
            num_samples = min(num_samples, 64)
        start = time.perf_counter()
        real = self._real_features(trainer, pl_module, stage)
        # A tiny split (an image folder of a few dozen images) cannot give every metric: skip
        # those, once said, rather than stop a training run over its monitoring.
        rows = min(len(real[0]), num_samples)
        skipped = [m for m in metrics if rows < MIN_SAMPLES.get(m, (0,))[0]]
        if skipped and (stage, tuple(skipped)) not in self._warned:
            self._warned.add((stage, tuple(skipped)))
            log.warning(
                "%s: %s skipped: %d images are too few for them (%s).", stage,
                ",".join(skipped), rows,
                "; ".join(f"{m} needs >= {MIN_SAMPLES[m][0]}" for m in skipped),
            )  # fmt: skip
        metrics = [m for m in metrics if m not in skipped]
        if not metrics:
            return
        fake = generated_features(pl_module, self.features, num_samples, self.seed, self.batch_size)
        scores = score(real, fake, metrics, kid_subset_size=min(1000, num_samples))
        for name, value in scores.items():
            if isinstance(value, (int, float)):
                # Every DDP rank scores the same seeded samples, so no reduction is needed.
                pl_module.log(f"{stage}/{name}", value)
        pl_module.log(f"{stage}/{COST}", time.perf_counter() - start)
        if stage == "test" and "classes_covered" in scores:
            log.info("test samples per predicted class: %s", scores["class_counts"])

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        self._score(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._score(trainer, pl_module, "test")

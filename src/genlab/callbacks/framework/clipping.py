"""Gradient clipping of a manually optimised model at its ``gradient_clip_val``.

It clips in ``on_before_optimizer_step``, inside ``optimizer.step()``: under 16-mixed the
precision plugin unscales the gradients just before this hook, so clipping earlier would clip
the scaled norm. Automatic optimisation clips with ``trainer.gradient_clip_val`` instead
(which manual optimisation refuses).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback


class GradientClipping(Callback):
    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any
    ) -> None:
        clip = getattr(pl_module, "gradient_clip_val", None)
        if clip and not pl_module.automatic_optimization:
            pl_module.clip_gradients(optimizer, gradient_clip_val=clip)

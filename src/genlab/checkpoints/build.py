"""The model a config describes, as training builds it and as a checkpoint's weights expect it.

``train.py`` and ``load_model`` both build through ``build_model``: a differentially private run
trains reshaped nets (BatchNorm -> GroupNorm), so its weights only fit a model that the privacy
component has prepared the same way. The privacy group is built with Hydra from its
``_target_``, so this layer never imports ``genlab.privacy``.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig

from genlab.config.instantiate import instantiate_group


def build_model(cfg: DictConfig) -> tuple[pl.LightningModule, Any | None]:
    """``(cfg.model built, the privacy component or None)``.

    With ``privacy.enabled`` the ``privacy`` group is built too and prepares the model (it
    refuses what DP-SGD cannot train, before any data is loaded); training installs it as a
    callback. Constructor mistakes are one-line ``ConfigError``s naming the group."""
    model = instantiate_group(cfg, "model")
    privacy = cfg.get("privacy")
    if not (privacy and privacy.get("enabled")):
        return model, None
    dp = instantiate_group(cfg, "privacy")
    dp.prepare(model)
    return model, dp

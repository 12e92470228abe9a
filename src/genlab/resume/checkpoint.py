"""Write checkpoints atomically; read them back without knowing the model class.

Every checkpoint written by ``train.py`` carries the run's resolved config (see
``genlab.resume.stored_config.StoreConfigInCheckpoint``), so ``sample.py`` and ``eval.py`` rebuild
the exact model (class from ``model._target_``) and data module from the path alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from genlab.errors import CheckpointError
from genlab.resume.stored_config import CONFIG_KEY
from genlab.utils.atomic import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, through ``atomic_path`` for local files: a SIGKILL while
    ``last.ckpt`` is being rewritten leaves the previous ``last.ckpt`` intact."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        if "://" in str(path):  # remote storage (s3://, gs://): its own semantics
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


def last_good_checkpoint(trainer: pl.Trainer | None) -> str:
    """The newest checkpoint file this run has written, or a pointer to where they go."""
    paths = []
    for cb in getattr(trainer, "checkpoint_callbacks", []) or []:
        paths += [p for p in (cb.last_model_path, cb.best_model_path) if p and Path(p).is_file()]
    if not paths:
        return "none written yet (the run's checkpoints/ folder)"
    return max(paths, key=lambda p: Path(p).stat().st_mtime)


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist. Runs keep them in "
            "outputs/train/runs/<time>/checkpoints/ (last.ckpt and the best on model.monitor)."
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain data
    except Exception as err:  # truncated, not a torch file, or pickled objects we won't run
        raise CheckpointError(
            f"cannot read checkpoint {path} ({type(err).__name__}: {str(err).splitlines()[0]}). "
            "It is truncated, corrupt or not a PyTorch checkpoint. Use another one from the "
            "run's checkpoints/ folder (last.ckpt or the best epochNNN.ckpt)."
        ) from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(
            f"{path} is a PyTorch file but not a Lightning checkpoint (no 'state_dict'): pass a "
            ".ckpt written by train.py (outputs/train/runs/<time>/checkpoints/)."
        )
    if CONFIG_KEY not in ckpt:
        raise CheckpointError(
            f"{path} has no '{CONFIG_KEY}' entry: it was not written by genlab's train.py, so "
            "the model class is unknown."
        )
    return ckpt


def load_model(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[pl.LightningModule, DictConfig]:
    """Return (model in eval mode with the checkpoint's weights, the run's config)."""
    ckpt = read_checkpoint(path)
    cfg = OmegaConf.create(ckpt[CONFIG_KEY])
    try:
        model = instantiate(cfg.model)
        privacy = cfg.get("privacy")
        if privacy and privacy.get("enabled"):  # DP runs train reshaped nets (GroupNorm)
            instantiate(privacy).prepare(model)
        model.load_state_dict(ckpt["state_dict"])
    except (InstantiationException, RuntimeError) as err:
        raise CheckpointError(
            f"{path} was written by a different version of the code: rebuilding "
            f"{cfg.model.get('_target_')} from its stored config failed ({err}). Check out the "
            "commit the run used (its .hydra/ folder holds the config) and load it there."
        ) from err
    return model.to(map_location).eval(), cfg

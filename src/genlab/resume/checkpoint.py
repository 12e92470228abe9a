"""Load a genlab checkpoint without knowing its model class.

Every checkpoint written by ``train.py`` carries the run's resolved config (see
``genlab.callbacks.config.StoreConfigInCheckpoint``), so ``sample.py`` and ``eval.py`` rebuild the
exact model (class from ``model._target_``) and data module from the path alone.
"""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from genlab.callbacks.config import CONFIG_KEY
from genlab.errors import CheckpointError
from genlab.models.base import GenerativeModel


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
) -> tuple[GenerativeModel, DictConfig]:
    """Return (model in eval mode with the checkpoint's weights, the run's config)."""
    ckpt = read_checkpoint(path)
    cfg = OmegaConf.create(ckpt[CONFIG_KEY])
    try:
        model = instantiate(cfg.model)
        model.load_state_dict(ckpt["state_dict"])
    except (InstantiationException, RuntimeError) as err:
        raise CheckpointError(
            f"{path} was written by a different version of the code: rebuilding "
            f"{cfg.model.get('_target_')} from its stored config failed ({err}). Check out the "
            "commit the run used (its .hydra/ folder holds the config) and load it there."
        ) from err
    return model.to(map_location).eval(), cfg

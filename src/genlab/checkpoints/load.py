"""Read checkpoints back without knowing the model class.

Every checkpoint written by ``train.py`` carries the run's resolved config (see
``genlab.resume.stored_config.StoreConfigInCheckpoint``), so ``sample.py``, ``eval.py`` and
``load_model`` rebuild the exact model (class from ``model._target_``, through ``build_model``)
and data module from the path alone, after the trust check of ``genlab.checkpoints.trust``.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from genlab.checkpoints.build import build_model
from genlab.checkpoints.keys import CONFIG_KEY
from genlab.checkpoints.moved import renamed_targets
from genlab.checkpoints.pretrained import pretrained_hint, resolve_checkpoint
from genlab.checkpoints.trust import check_stored_config
from genlab.errors import CheckpointError, ConfigError


def last_good_checkpoint(trainer: pl.Trainer | None) -> str:
    """The newest checkpoint file this run has written, or a pointer to where they go."""
    paths = []
    for cb in getattr(trainer, "checkpoint_callbacks", []) or []:
        paths += [p for p in (cb.last_model_path, cb.best_model_path) if p and Path(p).is_file()]
    if not paths:
        return "none written yet (the run's checkpoints/ folder)"
    return max(paths, key=lambda p: Path(p).stat().st_mtime)


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint at ``path``, or the shipped one ``pretrained:<name>`` names (its SHA256
    checked, as for any file of ``pretrained/``: genlab.checkpoints.pretrained)."""
    spec = path
    path = resolve_checkpoint(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist. Runs keep them in "
            "outputs/train/runs/<time>/checkpoints/ (last.ckpt and the best on model.monitor)."
            + pretrained_hint(spec)
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


def stored_config(checkpoint: dict, path: str | Path, trust: bool = False) -> DictConfig:
    """The config ``checkpoint`` (read from ``path``) carries, checked before anything is built
    from it: every ``_target_`` vouched for, every value plain data of the right type
    (genlab.checkpoints.trust; ``trust=True`` accepts it knowingly)."""
    config = renamed_targets(checkpoint[CONFIG_KEY])
    check_stored_config(config, path, trust=trust)
    return OmegaConf.create(config)


def load_model(
    path: str | Path, map_location: str | torch.device = "cpu", trust: bool = False
) -> tuple[pl.LightningModule, DictConfig]:
    """Return (model in eval mode with the checkpoint's weights, the run's config).

    The stored config is checked before the model is built from it: a checkpoint from someone
    else cannot make this call run code (docs/security.md). ``trust=True`` skips that check
    for a file whose author you trust."""
    ckpt = read_checkpoint(path)
    cfg = stored_config(ckpt, path, trust=trust)
    try:
        model, _ = build_model(cfg)  # as training built it (DP runs train reshaped nets)
        model.load_state_dict(ckpt["state_dict"])
    except (InstantiationException, RuntimeError) as err:
        raise _other_version(path, cfg, err) from err
    except ConfigError as err:
        # A constructor refusing a stored value means other code, not a user's typo; what
        # DP-SGD refuses in prepare() (no InstantiationException behind it) stays a ConfigError.
        if not isinstance(err.__cause__, InstantiationException):
            raise
        raise _other_version(path, cfg, err.__cause__) from err.__cause__
    return model.to(map_location).eval(), cfg


def _other_version(path: str | Path, cfg: DictConfig, err: Exception) -> CheckpointError:
    return CheckpointError(
        f"{path} was written by a different version of the code: rebuilding "
        f"{cfg.model.get('_target_')} from its stored config failed ({err}). Check out the "
        "commit the run used (its .hydra/ folder holds the config) and load it there."
    )


def check_fits(model: torch.nn.Module, checkpoint: dict, path: str | Path) -> None:
    """``checkpoint`` (read from ``path``) must hold weights of exactly this model's shapes:
    another model's, or a resume that changes a net (``model.latent_dim=32``) would otherwise
    fail at the first batch with a bare size-mismatch traceback, after the data is loaded.

    A weights-only checkpoint (a ``pretrained/`` export) is refused too: it holds no optimizer
    or loop state to resume from (Lightning would stop with a bare KeyError)."""
    if "optimizer_states" not in checkpoint:
        raise CheckpointError(
            f"{path} holds weights only (a pretrained/ export or a save_weights_only "
            "checkpoint), no optimizer or loop state: train.py ckpt_path= resumes a run from its "
            f"last.ckpt. Sample or score this one with sample.py / eval.py ckpt_path={path}."
        )
    stored = checkpoint["state_dict"]
    own = model.state_dict()
    missing = [k for k in own if k not in stored]
    unexpected = [k for k in stored if k not in own]
    reshaped = [k for k in own if k in stored and stored[k].shape != own[k].shape]
    if not (missing or unexpected or reshaped):
        return
    if reshaped:
        k = reshaped[0]
        what = (
            f"{len(reshaped)} weights of other shapes (e.g. {k}: {tuple(stored[k].shape)} "
            f"there, {tuple(own[k].shape)} here)"
        )
    else:
        what = f"other weights (missing here: {unexpected[:3]}; not there: {missing[:3]})"
    raise CheckpointError(
        f"{path} holds {what} than the model this config builds: it was written by another "
        "model or other net settings (latent_dim, widths). Resume without changing the model, "
        "or start a new run."
    )

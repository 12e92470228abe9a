"""Building objects from config groups, with user mistakes turned into one-line errors."""

from __future__ import annotations

from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from genlab.errors import ConfigError, GenlabError


def instantiate_group(cfg: DictConfig, key: str, **kwargs):
    """``instantiate(cfg[key])``, turning a constructor's complaint about its arguments into a
    one-line ``ConfigError`` that names the group (a bad value is the user's to fix, not a bug)."""
    try:
        return instantiate(cfg[key], **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        user_error = isinstance(cause, GenlabError) or (
            isinstance(cause, TypeError) and "unexpected keyword argument" in str(cause)
        )
        if user_error:
            raise ConfigError(f"{key} ({cfg[key].get('_target_')}): {cause}") from err
        raise


def instantiate_list(group: DictConfig | None) -> list:
    """Instantiate each ``_target_`` entry of a dict-of-configs group (callbacks, loggers).

    Entries set to null are skipped, so ``callbacks.lr_monitor=null`` switches one off.
    """
    if not group:
        return []
    return [instantiate(item) for item in group.values() if item and "_target_" in item]


def to_dict(cfg: DictConfig) -> dict:
    """Resolved plain-dict copy of a config (for loggers and checkpoints), without the
    ``hydra`` node a config composed with ``return_hydra_config=True`` holds."""
    keys = [k for k in cfg if k != "hydra"]
    return OmegaConf.to_container(  # type: ignore[return-value]
        OmegaConf.masked_copy(cfg, keys), resolve=True, throw_on_missing=False
    )


def target_class(node: DictConfig | None) -> type | None:
    """The class ``node`` builds, or None (no ``_target_``, or one that does not import: building
    it reports that)."""
    if not node or "_target_" not in node:
        return None
    try:
        return get_class(node["_target_"])
    except (ImportError, ValueError):
        return None

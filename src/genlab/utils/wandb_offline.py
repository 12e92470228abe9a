"""``logger=wandb`` on a machine that cannot reach W&B: log offline with one warning.

The decision is applied to the logger being built, never to the config that is saved in
checkpoints: a resumed run asks again, and logs online once the network is back.
"""

from __future__ import annotations

import logging
import netrc
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def wandb_offline_reason(wandb_cfg: DictConfig, timeout: float = 3.0) -> str | None:
    """Why an online W&B run could not start here (no credentials, server unreachable), or
    None. Both would otherwise cost minutes: a login prompt, or wandb.init's 90 s timeout."""
    base_url = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    parsed = urlparse(base_url)
    host = parsed.hostname or "api.wandb.ai"
    if not os.environ.get("WANDB_API_KEY") and not _netrc_has(host):
        return "no W&B credentials (WANDB_API_KEY or `wandb login`)"
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        return f"cannot reach {base_url} ({err.strerror or err})"
    return None


def _netrc_has(host: str) -> bool:
    # `wandb login` stores the key in the netrc file ($NETRC, ~/.netrc or ~/_netrc) under the
    # API host, which is not api.wandb.ai on a self-hosted server.
    candidates = [os.environ.get("NETRC"), Path.home() / ".netrc", Path.home() / "_netrc"]
    for path in filter(None, candidates):
        try:
            if netrc.netrc(str(path)).authenticators(host):
                return True
        except (OSError, netrc.NetrcParseError):
            continue
    return False


def offline_logger_config(logger_cfg: DictConfig | None) -> DictConfig | None:
    """The ``logger`` group to build: as given, or, for ``logger=wandb`` online without
    credentials or network, a copy that logs offline (one warning) rather than hang at a login
    prompt or crash the run. ``wandb sync`` uploads it later. ``logger_cfg`` is not changed."""
    wandb_cfg = (logger_cfg or {}).get("wandb")
    if not wandb_cfg or wandb_cfg.get("mode", "online") != "online":
        return logger_cfg
    reason = wandb_offline_reason(wandb_cfg)
    if reason is None:
        return logger_cfg
    log.warning(
        "W&B: %s; logging offline instead. Upload later with: wandb sync %s/wandb/offline-run-*",
        reason,
        wandb_cfg.get("save_dir", "<run dir>"),
    )
    adapted = OmegaConf.merge(logger_cfg, {"wandb": {"mode": "offline"}})
    assert isinstance(adapted, DictConfig)
    return adapted

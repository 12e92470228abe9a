"""``logger=wandb`` on a machine that cannot reach W&B: log offline with one warning.

The decision is applied to the logger being built, never to the config that is saved in
checkpoints: a resumed run asks again, and logs online once the network is back.
"""

from __future__ import annotations

import base64
import json
import logging
import netrc
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import DictConfig

log = logging.getLogger(__name__)


def wandb_offline_reason(wandb_cfg: DictConfig, timeout: float = 3.0) -> str | None:
    """Why an online W&B run could not start here, or None. No credentials, a server out of
    reach, a server that answers but is not W&B (a proxy, a captive portal, a typo in
    WANDB_BASE_URL) or one that rejects the key would otherwise cost minutes (a login prompt,
    wandb.init's 90 s timeout) or crash the run (``CommError``)."""
    base_url = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    parsed = urlparse(base_url)
    host = parsed.hostname or "api.wandb.ai"
    key = os.environ.get("WANDB_API_KEY") or _netrc_key(host)
    if not key:
        return "no W&B credentials (WANDB_API_KEY or `wandb login`)"
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        return f"cannot reach {base_url} ({err.strerror or err})"
    return _api_problem(base_url, key, timeout)


def _api_problem(base_url: str, key: str, timeout: float) -> str | None:
    """Ask the W&B API who the key belongs to (the query wandb itself starts with): None if
    a W&B server answers for this key, else what went wrong."""
    request = urllib.request.Request(
        base_url.rstrip("/") + "/graphql",
        data=json.dumps({"query": "query Viewer { viewer { id } }"}).encode(),
        headers={
            "Content-Type": "application/json",
            "Authorization": "Basic " + base64.b64encode(f"api:{key}".encode()).decode(),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            return f"{base_url} rejects the API key (HTTP {err.code}): check WANDB_API_KEY"
        return f"{base_url} answers HTTP {err.code}, not as a W&B server (check WANDB_BASE_URL)"
    except (urllib.error.URLError, OSError, ValueError) as err:  # timeout, TLS, not JSON
        reason = getattr(err, "reason", None) or err
        return f"{base_url} does not answer as a W&B server ({reason})"
    viewer = ((body or {}).get("data") or {}).get("viewer") if isinstance(body, dict) else None
    if not viewer:
        return f"{base_url} does not know this API key (no viewer): check WANDB_API_KEY"
    return None


def _netrc_key(host: str) -> str | None:
    # `wandb login` stores the key in the netrc file ($NETRC, ~/.netrc or ~/_netrc) under the
    # API host, which is not api.wandb.ai on a self-hosted server.
    candidates = [os.environ.get("NETRC"), Path.home() / ".netrc", Path.home() / "_netrc"]
    for path in filter(None, candidates):
        try:
            found = netrc.netrc(str(path)).authenticators(host)
        except (OSError, netrc.NetrcParseError):
            continue
        if found and found[2]:
            return found[2]
    return None


def offline_overrides(wandb_cfg: DictConfig) -> dict[str, str]:
    """``{"mode": "offline"}`` (with one warning) when ``wandb_cfg`` asks for an online run that
    could not start here (no credentials or network): logging offline beats hanging at a login
    prompt or crashing the run, and ``wandb sync`` uploads it later. Else ``{}``. Arguments for
    the logger being built; ``wandb_cfg`` is not changed."""
    if wandb_cfg.get("mode", "online") != "online":
        return {}
    reason = wandb_offline_reason(wandb_cfg)
    if reason is None:
        return {}
    log.warning(
        "W&B: %s; logging offline instead. Upload later with: wandb sync %s/wandb/offline-run-*",
        reason,
        wandb_cfg.get("save_dir", "<run dir>"),
    )
    return {"mode": "offline"}

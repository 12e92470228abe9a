"""Start-up checks and helpers on the composed Hydra config."""

from __future__ import annotations

import inspect
import logging
import netrc
import os
import socket
import sys
import types
import typing
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from genlab.errors import ConfigError, GenlabError

log = logging.getLogger(__name__)


def check_accelerator(trainer_cfg: DictConfig) -> None:
    """Fail before any data is loaded when the requested accelerator is not on this machine."""
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    devices = trainer_cfg.get("devices", "auto")
    if accelerator in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"trainer.accelerator={accelerator} but this machine has no usable CUDA GPU "
                f"(torch {torch.__version__}, CUDA build {torch.version.cuda}, "
                "torch.cuda.is_available() is False). Use trainer=cpu, or trainer=default to "
                "pick the best accelerator present."
            )
        if isinstance(devices, int) and devices > torch.cuda.device_count():
            raise ConfigError(
                f"trainer.devices={devices} but only {torch.cuda.device_count()} GPU(s) are "
                "visible. Lower trainer.devices or check CUDA_VISIBLE_DEVICES."
            )
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            "trainer.accelerator=mps but Apple's MPS backend is not available here. "
            "Use trainer=cpu or trainer=default."
        )


def validate(cfg: DictConfig) -> None:
    """Every check that needs no data: run first, so a typo costs seconds, not a dataset load."""
    for key in ("model", "data", "trainer"):
        if key not in cfg:
            raise ConfigError(f"the config has no '{key}' group: pass {key}=<choice>.")
    check_required(cfg)
    if cfg.model.get("monitor_mode") not in ("min", "max"):
        raise ConfigError(
            f"model.monitor_mode={cfg.model.get('monitor_mode')!r}: choose 'min' or 'max'."
        )
    check_accelerator(cfg.trainer)
    for group in ("data", "model", "trainer"):
        check_types(cfg[group], group)
    check_nets_match_data(cfg)


_SCALARS = (int, float, bool, str, type(None))


def _hint_leaves(hint: Any) -> list[Any] | None:
    """The alternatives of a type hint (``int | None`` -> [int, None]); None when it cannot
    be judged from the config value alone (classes, callables, containers of those)."""
    if hint is Any:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        leaves: list[Any] = []
        for arg in typing.get_args(hint):
            sub = _hint_leaves(arg)
            if sub is None:
                return None
            leaves += sub
        return leaves
    if origin is typing.Literal:
        return [("literal", typing.get_args(hint))]
    if hint in _SCALARS or hint is torch.Tensor:
        return [hint]
    return None


def _accepts(leaves: list[Any], value: Any) -> bool:
    for leaf in leaves:
        if isinstance(leaf, tuple):
            if value in leaf[1]:
                return True
        elif leaf is torch.Tensor or leaf is float:  # Tensor: e.g. an optimizer's lr
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return True
        elif leaf is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return True
        elif isinstance(value, leaf):
            return True
    return False


def _describe(leaves: list[Any]) -> str:
    names: list[str] = []
    literals: list[Any] = []
    for leaf in leaves:
        if isinstance(leaf, tuple):
            literals += [v for v in leaf[1] if v not in literals]
            continue
        name = "null" if leaf is type(None) else "float" if leaf is torch.Tensor else leaf.__name__
        if name not in names:
            names.append(name)
    if literals:
        names.insert(0, "one of " + ", ".join(map(repr, literals)))
    return " or ".join(names)


def _init_hints(target: str) -> dict[str, Any]:
    """Parameter name -> type hint of ``target``'s constructor (or of the function itself);
    hints that cannot be evaluated are left out."""
    from hydra.utils import get_object

    try:
        obj = get_object(target)
    except Exception:
        return {}  # a bad _target_ is reported by instantiate, with its own message
    fn = obj.__init__ if inspect.isclass(obj) else obj
    try:
        return typing.get_type_hints(fn)
    except Exception:
        pass
    hints = {}
    module = vars(sys.modules.get(getattr(fn, "__module__", ""), object()))
    for name, param in inspect.signature(fn).parameters.items():
        annotation = param.annotation
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, dict(module))  # the code's own annotations
            except Exception:
                continue
        if annotation is not inspect.Parameter.empty:
            hints[name] = annotation
    return hints


def check_types(node: DictConfig, prefix: str) -> None:
    """``data.batch_size=abc`` fails here, naming the key and the type it needs, instead of
    as a TypeError deep inside a constructor (or not at all) once the data is loaded."""
    target = node.get("_target_")
    hints = _init_hints(target) if target else {}
    for key in node:
        if str(key).startswith("_"):
            continue
        try:
            value = node[key]
        except Exception:
            continue  # unresolvable interpolation: reported where it is used
        if isinstance(value, DictConfig):
            check_types(value, f"{prefix}.{key}")
            continue
        leaves = _hint_leaves(hints[key]) if key in hints else None
        if leaves is None:
            continue
        plain = OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
        if not _accepts(leaves, plain):
            wanted = _describe(leaves)
            raise ConfigError(
                f"{prefix}.{key}={plain!r} ({type(plain).__name__}): {target} needs {wanted} "
                f"there. Fix the value on the command line or in the config file."
            )


def check_nets_match_data(cfg: DictConfig) -> None:
    """Nets built for other images than the data gives (an overridden ``channels`` or
    ``image_size``) would fail at the first batch with a bare shape error."""
    for name, net in cfg.model.items():
        if not isinstance(net, DictConfig) or "_target_" not in net:
            continue
        for key in ("channels", "image_size"):
            if key in net and key in cfg.data and net[key] != cfg.data[key]:
                raise ConfigError(
                    f"model.{name}.{key}={net[key]} but data.{key}={cfg.data[key]}: the nets "
                    f"must be built for the images the data module gives. Set data.{key} "
                    f"instead (model.*.{key} follow it), or drop the model.{name}.{key} override."
                )


def _missing_keys(node: DictConfig, prefix: str = "") -> list[str]:
    """Dotted keys whose value is ``???``, found without resolving interpolations (a value
    such as ``${image_size_of:${data.path}}`` would fail to resolve while data.path is ???)."""
    keys = []
    for key in node:
        if OmegaConf.is_interpolation(node, key):
            continue
        if OmegaConf.is_missing(node, key):
            keys.append(f"{prefix}{key}")
        else:
            child = node._get_node(key)
            if isinstance(child, DictConfig):
                keys += _missing_keys(child, f"{prefix}{key}.")
    return keys


def adapt_strategy_to_launcher(cfg: DictConfig) -> None:
    """Lightning's ``ddp`` starts ranks 1..n-1 by re-running this command line; inside a local
    Hydra multirun (basic or joblib launcher) that re-runs the whole sweep. There ``ddp`` becomes
    ``ddp_spawn`` (ranks forked from the job itself). SLURM via submitit starts one task per
    device itself, which is what plain ``ddp`` expects, so it is left alone there."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    strategy = str(cfg.trainer.get("strategy", "auto"))
    if not strategy.startswith("ddp") or strategy.startswith("ddp_spawn"):
        return
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    launcher = str(HydraConfig.get().launcher.get("_target_", ""))
    if "submitit" in launcher:
        devices = cfg.trainer.get("devices")
        tasks = HydraConfig.get().launcher.get("tasks_per_node")
        if tasks is not None and devices != tasks:
            raise ConfigError(
                f"trainer.devices={devices} but hydra.launcher.tasks_per_node={tasks}: Lightning's "
                "DDP on SLURM needs one task per device. Set both to the GPUs per node."
            )
        return
    spawn = strategy.replace("ddp", "ddp_spawn", 1)
    log.warning("trainer.strategy=%s inside a local multirun: using %s", strategy, spawn)
    with open_dict(cfg):
        cfg.trainer.strategy = spawn


def check_required(cfg: DictConfig) -> None:
    """Values marked ``???`` (e.g. ``data.path`` of data=image_folder) must be given."""
    missing = [k for k in _missing_keys(cfg) if not k.startswith("hydra")]
    if missing:
        given = " ".join(f"{k}=..." for k in missing)
        raise ConfigError(f"{', '.join(missing)} must be set: add {given} to the command.")


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


def fall_back_to_offline_wandb(logger_cfg: DictConfig | None) -> None:
    """``logger=wandb`` online without credentials or network: log offline, with one warning,
    rather than hang at a login prompt or crash the run. ``wandb sync`` uploads it later."""
    wandb_cfg = (logger_cfg or {}).get("wandb")
    if not wandb_cfg or wandb_cfg.get("mode", "online") != "online":
        return
    reason = wandb_offline_reason(wandb_cfg)
    if reason is None:
        return
    log.warning(
        "W&B: %s; logging offline instead. Upload later with: wandb sync %s/wandb/offline-run-*",
        reason,
        wandb_cfg.get("save_dir", "<run dir>"),
    )
    with open_dict(wandb_cfg):
        wandb_cfg.mode = "offline"


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
    """Resolved plain-dict copy of a config (for loggers and checkpoints)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore[return-value]


# Warnings that are noise for this template, each with the reason it is safe to hide.
KNOWN_WARNINGS = (
    # The CSV logger writes into the Hydra run dir, which already holds .hydra/: nothing is lost.
    r"Experiment logs directory .* exists and is not empty",
    # The data sets are in-memory tensors: worker processes would only add start-up time.
    r".*does not have many workers which may be a bottleneck.*",
    # torchmetrics' KID/IS keep features in memory: ours are precomputed and small.
    r"Metric `.*` will save all extracted features in buffer.*",
    # Lightning-internal deprecation, not ours to fix.
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
)


def silence_known_warnings() -> None:
    for pattern in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


def apply_extras(cfg: DictConfig) -> None:
    """The ``extras`` group of every entry point: hide known noise, print the config."""
    extras = cfg.get("extras") or {}
    if extras.get("ignore_warnings"):
        silence_known_warnings()
    if extras.get("print_config"):
        print_config(cfg)


def print_config(cfg: DictConfig) -> None:
    """Print the resolved config as a rich tree: the first thing to read in a run's log."""
    from rich import print as rprint
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", guide_style="dim")
    for key in cfg:
        value = cfg[key]
        text = (
            OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        )
        tree.add(str(key)).add(Syntax(text, "yaml", theme="ansi_dark"))
    rprint(tree)

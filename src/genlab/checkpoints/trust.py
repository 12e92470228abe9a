"""A checkpoint is data: the config stored in it is checked before anything is built from it.

Every checkpoint ``train.py`` writes carries the run's resolved config, and ``sample.py``,
``eval.py``, ``train.py resume=``, ``load_model()`` and the export script rebuild the model (and
data module) from it with Hydra's ``instantiate``. Hydra calls whatever a ``_target_`` names,
so a shared checkpoint could otherwise run any callable with arguments of its author's choosing.
``check_stored_config`` walks the whole stored tree first and refuses, with one line naming
the key and the target:

- a ``_target_`` the local installation does not vouch for (``vouched``): anything but the
  targets of the local ``conf/`` tree, the classes of genlab and of the project's own packages
  (a researcher's ``my_models.*``), and torch's optimizer, scheduler and ``nn`` module classes;
- a value that is not plain data (None, bool, int, float, str, lists and dicts of them),
  an interpolation or resolver call (``${oc.env:...}``: the stored config is resolved, so a
  real one has none), or a Hydra key other than ``_target_``/``_partial_``/``_recursive_``/
  ``_convert_``/``_args_``;
- a value of a type its constructor's hints do not accept (``genlab.config.validation``).

``trust=True`` (``trust_checkpoint=true`` on the command line) accepts a file knowingly, as
``trust_remote_code`` does elsewhere. docs/security.md has the threat model.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from genlab.errors import CheckpointError, ConfigError
from genlab.utils.paths import project_root

# Hydra's own keys, with the values they may take.
_HYDRA_KEYS = {
    "_target_": (str,),
    "_partial_": (bool,),
    "_recursive_": (bool,),
    "_convert_": (str,),
    "_args_": (list,),
}
_PLAIN = (type(None), bool, int, float, str)
# Classes of these packages build nothing but tensors: safe whatever their arguments.
_TORCH_CLASSES = ("torch.optim.", "torch.nn.")

TRUST_HINT = (
    "If you trust whoever wrote this file, accept it knowingly with trust_checkpoint=true "
    "(load_model(..., trust=True) in Python); docs/security.md"
)


class UntrustedCheckpoint(CheckpointError):
    """A checkpoint's stored config asks for something this installation does not vouch for."""


@functools.lru_cache(maxsize=8)
def conf_targets(conf_dir: str) -> frozenset[str]:
    """Every ``_target_`` written in the config files under ``conf_dir`` (nested ones too)."""
    found: set[str] = set()
    for path in sorted(Path(conf_dir).rglob("*.yaml")):
        try:
            tree = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue  # Hydra reports a broken config file itself, when it is used
        for key, value in _walk(tree, ""):
            if key.endswith("_target_") and isinstance(value, str):
                found.add(value)
    return frozenset(found)


def vouched(target: str, conf_dir: str | None = None) -> bool:
    """Whether this installation vouches for building ``target``: the local ``conf/`` uses it,
    or it is a class of genlab, of the project's own packages (``my_models``, a test's
    callback) or a torch optimizer/scheduler/module class."""
    root = Path(project_root())
    dirs = [conf_dir] if conf_dir else [str(root / "conf"), *_searched_conf_dirs()]
    if any(target in conf_targets(d) for d in dirs):
        return True
    parts = target.split(".")
    if len(parts) < 2 or not all(p.isidentifier() for p in parts):
        return False
    local = (root / parts[0] / "__init__.py").is_file() or (root / f"{parts[0]}.py").is_file()
    if not (target.startswith(("genlab.", *_TORCH_CLASSES)) or local):
        return False
    obj = _locate(target)  # imports only genlab's, torch's and the project's own modules
    if not inspect.isclass(obj):
        return False
    # A class defined in that package, not something it imports (genlab.x.os.system).
    owner = parts[0] + "."
    if target.startswith(_TORCH_CLASSES):
        owner = ".".join(parts[:2]) + "."
    return f"{obj.__module__}.".startswith(owner)


def _searched_conf_dirs() -> list[str]:
    """The config folders this command's Hydra searches (``--config-dir``, ``hydra.searchpath``):
    a researcher's own configs, chosen on this machine, vouch like conf/."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    sources = HydraConfig.get().runtime.config_sources
    return [s.path for s in sources if s.schema == "file" and Path(s.path).is_dir()]


def _locate(target: str) -> Any:
    """The object ``a.b.C`` names (None if there is none), importing the longest module prefix."""
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        except Exception:  # a module that fails to import vouches for nothing
            return None
        for name in parts[cut:]:
            obj = getattr(obj, name, None)
        return obj
    return None


def check_stored_config(config: Any, where: str | Path, trust: bool = False) -> None:
    """Refuse a stored config that could run code or is not plain data (module docstring).

    ``where`` names the file in the message. With ``trust`` nothing is checked."""
    if trust:
        return
    if not isinstance(config, dict):
        _refuse(where, "", f"is a {type(config).__name__}, not a config mapping")
    for key, value in _walk(config, ""):
        if isinstance(value, _NonStringKey):
            _refuse(where, key, f"has a key of type {type(value.key).__name__}, not a string")
        name = key.rsplit(".", 1)[-1]
        if name.startswith("_") and name.endswith("_") and name in _HYDRA_KEYS:
            if not isinstance(value, _HYDRA_KEYS[name]):
                _refuse(where, key, f"is {value!r}, not a {_HYDRA_KEYS[name][0].__name__}")
            if name == "_target_" and not vouched(value):
                _refuse(
                    where,
                    key,
                    f"names {value!r}, which this installation does not vouch for (not in "
                    "its conf/, not a class of genlab, of this project or a torch "
                    "optimizer/module): building it would run that code",
                )
            continue
        if name.startswith("_") and name.endswith("_"):
            _refuse(where, key, "is a Hydra key genlab never writes")
        if isinstance(value, (dict, list)):
            continue
        if not isinstance(value, _PLAIN):
            _refuse(where, key, f"holds a {type(value).__name__}, not plain config data")
        if isinstance(value, str) and "${" in value:
            _refuse(where, key, f"is {value[:60]!r}, an interpolation (stored configs have none)")
    _check_types(config, where)


def _check_types(config: dict, where: str | Path) -> None:
    """Every vouched constructor gets values of the types its hints accept."""
    from genlab.config.validation import check_types

    stored = OmegaConf.create(config)
    for group in ("model", "data", "privacy", "features"):
        node = stored.get(group)
        if node is None or not OmegaConf.is_dict(node):
            continue
        try:
            check_types(node, group)
        except ConfigError as err:
            reason = str(err).split(". Fix the value")[0]
            raise UntrustedCheckpoint(
                f"checkpoint {where}: its stored config is not what this code writes: "
                f"{reason}. Use a checkpoint written by genlab's train.py. {TRUST_HINT}."
            ) from err


def _walk(node: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every entry in a tree of dicts and lists, parents first."""
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if not isinstance(key, str):
                yield path, _NonStringKey(key)
                continue
            yield path, value
            yield from _walk(value, path)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            path = f"{prefix}[{index}]"
            yield path, value
            yield from _walk(value, path)


class _NonStringKey:
    """Stands for a mapping key that is not a string (never in a config genlab writes)."""

    def __init__(self, key: Any) -> None:
        self.key = key


def _refuse(where: str | Path, key: str, what: str) -> None:
    name = f"key {key}" if key else "the config"
    raise UntrustedCheckpoint(
        f"refused checkpoint {where}: its stored config's {name} {what}. Nothing was built "
        f"from it. {TRUST_HINT}."
    )


def _is_pathlike(value: Any) -> bool:
    return isinstance(value, str) and (
        value.startswith(("/", "~")) or value == ".." or value.startswith("../") or "/../" in value
    )


def foreign_paths(config: Any, allowed: list[str | Path]) -> list[tuple[str, str]]:
    """(key, value) of every path-like string of ``config`` that lies outside ``allowed``
    folders: what a resumed run would read or write at its author's choosing."""
    roots = [Path(a).resolve() for a in allowed]
    found = []
    for key, value in _walk(config, ""):
        if not _is_pathlike(value):
            continue
        target = Path(value).expanduser()
        resolved = target.resolve() if target.is_absolute() else target.absolute().resolve()
        if not any(resolved == r or r in resolved.parents for r in roots):
            found.append((key, value))
    return found

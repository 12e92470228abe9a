"""Start-up checks on the composed config: everything that needs no data, run first, so a
typo costs seconds, not a dataset load. Each failure is one ``ConfigError`` naming the key, the
value and the fix."""

from __future__ import annotations

import inspect
import sys
import types
import typing
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from genlab.config.arguments import Arg, check_args
from genlab.config.rules import (
    AT_LEAST_ONE,
    COUNT,
    MONITOR_MODE,
    NON_NEGATIVE,
    POSITIVE,
    SEED,
    OrNone,
    Range,
    Rule,
    is_number,
)
from genlab.config.suggest import closest_keys
from genlab.errors import ConfigError

# Arguments of torch.optim optimizers (their constructors are not ours to annotate).
OPTIMIZER_RANGES = {
    "lr": POSITIVE,
    "weight_decay": NON_NEGATIVE,
    "momentum": NON_NEGATIVE,
    "eps": POSITIVE,
    "betas": Range(ge=0, lt=1),  # each of them
    # Schedulers (torch.optim.lr_scheduler): a length of 0 or -1 (T_max: ${trainer.max_epochs}
    # with max_epochs=-1) would divide by it or never decay.
    "T_max": AT_LEAST_ONE,
    "step_size": AT_LEAST_ONE,
}
# train.yaml's own top-level arguments, in the schema eval.py and sample.py use for theirs.
TRAIN_ARGS = {
    "seed": Arg("the seed of every random draw of the run", SEED, "42"),
    "checkpoint_every_n_batches": Arg(
        "how often last.ckpt is rewritten inside an epoch (null: at epoch ends)",
        OrNone(COUNT),
        "500",
    ),
    "requeue_limit": Arg(
        "how many times a SLURM batch job stopped by a signal requeues itself",
        Range(ge=0, integer=True),
        "10",
    ),
}


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
    check_monitor_keys(cfg.model)
    if cfg.model.get("monitor_mode") is not None:
        check_monitor_mode(cfg.model.monitor_mode)
    check_accelerator(cfg.trainer)
    check_args(cfg, TRAIN_ARGS)
    # The trainer first: model values may interpolate its keys (the default GAN's cosine
    # T_max: ${trainer.max_epochs}), and the error should name the key the user wrote.
    check_types(cfg.trainer, "trainer")
    check_trainer_budget(cfg.trainer)
    for group in ("data", "model"):
        check_types(cfg[group], group)
    check_nets_match_data(cfg)
    check_own_config(cfg.data)


def check_own_config(node: DictConfig) -> None:
    """A class's own cheap start-up check, ``check_config(node)`` where its ``_target_``
    defines one (an image folder that is missing or empty), run before anything is printed."""
    from hydra.utils import get_object

    try:
        check = getattr(get_object(node.get("_target_")), "check_config", None)
    except Exception:
        return  # a bad _target_ is reported by instantiate, with its own message
    if callable(check):
        check(node)


def check_monitor_keys(model_cfg: DictConfig) -> None:
    """Checkpointing, early stopping and sweeps interpolate ``${model.monitor}`` and
    ``${model.monitor_mode}``: without them the run would stop on an interpolation traceback."""
    for key, value in (("monitor", "val/<metric>"), ("monitor_mode", "min|max")):
        if key not in model_cfg:
            raise ConfigError(
                f"model.{key} is not set: contract row 'monitor' (docs/models.md) is broken. "
                f"Fix: add '{key}: {value}' to the model's config file (conf/model/<name>.yaml), "
                f"or pass +model.{key}={value} on the command line."
            )


def check_monitor_mode(mode: Any) -> None:
    """The one check of ``model.monitor_mode``, for the config at start-up and for a model
    built in Python."""
    if MONITOR_MODE.violation(mode) is not None:
        raise ConfigError(f"model.monitor_mode={mode!r}: choose 'min' or 'max'.")


def check_trainer_budget(trainer_cfg: DictConfig) -> None:
    """Lightning takes ``max_epochs=0`` (no training: the random weights are tested, exit 0)
    and ``-1`` (forever); below that it fails after loading the data."""
    epochs = trainer_cfg.get("max_epochs")
    if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs != -1 and epochs < 1:
        raise ConfigError(
            f"trainer.max_epochs={epochs}: train at least one epoch (or -1: until stopped)."
        )


# Trainer options that act on automatic optimisation only (genlab's models step themselves):
# the value that means "off", and what to do instead.
_AUTOMATIC_ONLY = {
    "accumulate_grad_batches": (
        1,
        "accumulate in the model's training_step or raise data.batch_size",
    ),
    "gradient_clip_val": (None, "set model.gradient_clip_val=<norm> instead (the model clips)"),
}


def check_manual_optimization(trainer_cfg: DictConfig) -> None:
    """For a model that optimises manually (all of genlab's): Lightning refuses these only
    once fit starts, with its own traceback."""
    for key, (off, fix) in _AUTOMATIC_ONLY.items():
        value = trainer_cfg.get(key, off)
        if value not in (off, 0):
            raise ConfigError(
                f"trainer.{key}={value}: the model optimises manually, which Lightning's "
                f"{key} does not support: remove it and {fix}."
            )


_SCALARS = (int, float, bool, str, type(None))


def _hint_leaves(hint: Any) -> list[Any] | None:
    """The alternatives of a type hint (``int | None`` -> [int, None]); None when it cannot
    be judged from the config value alone (classes, callables, containers of those)."""
    if hint is Any:
        return None
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        return _hint_leaves(typing.get_args(hint)[0])
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


def _did_you_mean(leaves: list[Any], value: Any) -> str:
    """ " (did you mean 'warn'?)" for a string near one of a ``Literal``'s choices, else ""."""
    choices = [v for leaf in leaves if isinstance(leaf, tuple) for v in leaf[1]]
    names = [v for v in choices if isinstance(v, str)]
    close = closest_keys(value, names, n=1) if isinstance(value, str) else []
    return f" (did you mean {close[0]!r}?)" if close else ""


def _init_hints(target: str) -> tuple[dict[str, Any], dict[str, Rule]]:
    """(parameter -> type hint, parameter -> its rule) of ``target``'s constructor (or of the
    function itself), read in one pass over the classes it passes ``**base`` on to, base first:
    a subclass's own hint wins, and one that re-declares ``batch_size: int`` keeps its parent's
    bound. Hints that cannot be evaluated are left out."""
    from hydra.utils import get_object

    try:
        obj = get_object(target)
    except Exception:
        return {}, {}  # a bad _target_ is reported by instantiate, with its own message
    if inspect.isclass(obj):
        fns = [vars(c)["__init__"] for c in reversed(obj.__mro__)
               if "__init__" in vars(c) and c is not object]  # fmt: skip
    else:
        fns = [obj]
    hints: dict[str, Any] = {}
    rules: dict[str, Rule] = {}
    for fn in fns:
        for name, hint in _hints_of(fn).items():
            hints[name] = hint
            found = _rule_of(hint)
            if found is not None:
                rules[name] = found
    return hints, rules


def _hints_of(fn: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn, include_extras=True)
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
    hints, rules = _init_hints(target) if target else ({}, {})
    if target and node.get("_partial_"):
        check_partial(node, prefix, target)
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
        plain = OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
        leaves = _hint_leaves(hints[key]) if key in hints else None
        if leaves is not None and not _accepts(leaves, plain):
            wanted = _describe(leaves) + _did_you_mean(leaves, plain)
            raise ConfigError(
                f"{prefix}.{key}={plain!r} ({type(plain).__name__}): {target} needs {wanted} "
                f"there. Fix the value on the command line or in the config file."
            )
        rule = rules.get(key)
        if rule is None and str(target).startswith("torch.optim."):
            rule = OPTIMIZER_RANGES.get(str(key))
        check_rule(f"{prefix}.{key}", plain, rule)


def check_partial(node: DictConfig, prefix: str, target: str) -> None:
    """A ``_partial_`` entry gets its first argument later (an optimizer its parameters, a
    scheduler its optimizer); every other required argument must be in the config now, or the
    run fails once training starts."""
    from hydra.utils import get_object

    try:
        signature = inspect.signature(get_object(target))
    except (Exception, ValueError):
        return  # a bad _target_ is reported by instantiate; builtins may have no signature
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = [p for p in signature.parameters.values() if p.kind in kinds]
    missing = [p.name for p in params[1:] if p.default is p.empty and p.name not in node]
    if missing:
        given = " ".join(f"{prefix}.{name}=<value>" for name in missing)
        raise ConfigError(
            f"{prefix} ({target}) needs {', '.join(missing)}, which the config does not give: "
            f"add {given}."
        )


def _rule_of(hint: Any) -> Rule | None:
    """The rule in an ``Annotated[...]`` hint (also inside ``Optional``), if any."""
    if typing.get_origin(hint) is typing.Annotated:
        return next((m for m in hint.__metadata__ if isinstance(m, Rule)), None)
    for arg in (
        typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else ()
    ):
        found = _rule_of(arg)
        if found is not None:
            return found
    return None


def check_rule(key: str, value: Any, rule: Rule | None) -> None:
    """``key=value`` refused by ``rule`` -> one ``ConfigError``. None passes (the hint says
    whether it may be null). A ``Range`` judges numbers only, each of a list (``betas``): the
    hint has judged the type already."""
    if rule is None or value is None:
        return
    values = [value]
    if isinstance(rule, Range):
        values = value if isinstance(value, (list, tuple)) else [value]
        values = [v for v in values if is_number(v)]
    for one in values:
        problem = rule.violation(one)
        if problem is not None:
            raise ConfigError(
                f"{key}={value!r} {problem}: fix the value on the command line or in the config file."
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


def check_required(cfg: DictConfig) -> None:
    """Values marked ``???`` (e.g. ``data.path`` of data=image_folder) must be given."""
    missing = [k for k in _missing_keys(cfg) if not k.startswith("hydra")]
    if missing:
        given = " ".join(f"{k}=..." for k in missing)
        raise ConfigError(f"{', '.join(missing)} must be set: add {given} to the command.")

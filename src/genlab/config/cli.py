"""Helpers for the ``train.py``/``eval.py``/``sample.py`` entry points."""

from __future__ import annotations

import errno
import importlib.util
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import yaml

from genlab.config.suggest import closest_keys
from genlab.errors import GenlabError


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """The error boundary of every entry point: a user's mistake becomes one line on stderr,
    ``genlab: error: <what>, <where>, <what to do>``, and exit status 1.

    A user who typed ``trainer=gpu`` on a laptop needs the fix, not a 40-line traceback. Besides
    genlab's own ``GenlabError``, library exceptions that mean a user mistake are translated
    (``user_error``); anything else is a bug and keeps its full traceback.

    In a multirun the error is re-raised after its line is printed: Hydra then records that
    job as failed (an Optuna sweep marks the trial FAIL and goes on), where exiting would end
    the whole sweep.

    Ctrl-C is the user's own stop: one line and exit status 130 (128 + SIGINT, as a shell
    reports it), also in a multirun, which it ends. train.py's fit handles Ctrl-C itself first
    (a checkpoint and a resume command, genlab.resume.interrupt).
    """
    _job_started()  # the job's own errors get Hydra's usual report (unknown_keys_as_one_line)
    try:
        yield
    except KeyboardInterrupt:
        print(
            "genlab: interrupted (Ctrl-C) before the end: run the command again to redo it.",
            file=sys.stderr,
        )
        sys.exit(130)
    except Exception as err:
        message = user_error(err)
        if message is None:
            raise  # a bug: the traceback is the report
        print(f"genlab: error: {message}", file=sys.stderr)
        if _in_multirun():
            raise
        sys.exit(1)


# Writing an output failed for a reason the user fixes with space, permissions or another path.
_OUTPUT_ERRNOS = {
    errno.ENOSPC: "the disk is full: free space there",
    errno.EDQUOT: "the disk quota is used up: free space there",
    errno.EROFS: "the file system is read-only: point paths.log_dir at a writable folder",
    errno.EACCES: "permission denied: fix the permissions or point paths.log_dir elsewhere",
    # Without a file-size limit (_output_fix names it), the file system's largest file (FAT32).
    errno.EFBIG: "the file is larger than this file system allows: point paths.log_dir at "
    "another disk",
}


def user_error(err: BaseException) -> str | None:
    """The one line for an exception that means a user mistake, or None for a bug."""
    if isinstance(err, GenlabError):
        return str(err)
    if isinstance(err, OSError) and err.errno in _OUTPUT_ERRNOS and err.filename:
        return f"cannot write {err.filename}: {_output_fix(err.errno)}."
    if isinstance(err, OSError) and err.errno == errno.EFBIG:
        # A failed write() names no file, and only writing a file can raise EFBIG.
        return f"cannot write a file: {_output_fix(err.errno)}."
    name = type(err).__name__
    if name == "MisconfigurationException":  # Lightning refused a trainer/callback setting
        first = str(err).strip().splitlines()[0] if str(err).strip() else name
        return f"Lightning refused the settings: {first} Check the trainer.* and callbacks.* keys."
    if name == "DecompressionBombError":  # PIL: an image far larger than any training image
        return f"{err} Remove or shrink that image (data.path)."
    # Hydra could not build a _target_: it names nothing, or its constructor refuses the
    # arguments of that config entry.
    refused = "Error locating target" in str(err) or isinstance(
        err.__cause__, (TypeError, ValueError)
    )
    if name == "InstantiationException" and refused:
        first = str(err).strip().splitlines()[0]
        return f"{first} Fix that config entry's arguments or its _target_."
    return None


def _output_fix(code: int) -> str:
    if code == errno.EFBIG and file_size_limit() is not None:
        return (
            f"the file would pass this process's file-size limit of {file_size_limit()} bytes: "
            "raise it (ulimit -f unlimited, or ask the cluster's admins for more)"
        )
    return _OUTPUT_ERRNOS[code]


def file_size_limit() -> int | None:
    """The largest file this process may write, in bytes (``ulimit -f``), or None: no limit."""
    try:
        import resource  # POSIX only
    except ImportError:
        return None
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


# Hydra prints an error of composing the config and exits, unless HYDRA_FULL_ERROR=1, when it
# raises it instead. `unknown_keys_as_one_line` sets that variable until the job starts (marked
# as genlab's in _OURS, which a launcher's worker processes inherit too); `exit_on_user_error`,
# the job's first step, takes it back, so the job's own errors keep Hydra's usual report.
_FULL_ERROR = "HYDRA_FULL_ERROR"
_OURS = "GENLAB_SET_HYDRA_FULL_ERROR"


def _job_started() -> None:
    if os.environ.pop(_OURS, None) is not None:
        os.environ.pop(_FULL_ERROR, None)


@contextmanager
def unknown_keys_as_one_line(conf_dir: str | Path, config_name: str) -> Iterator[None]:
    """Around an entry point's ``@hydra.main`` function: an override of a key that the composed
    config lacks (``model.lattent_dim=8``) is one line naming the closest keys it has, not
    Hydra's advice to add it with ``+`` (which the model would then refuse).

    Free when the command is right: the config is composed again, to find the closest keys,
    only after Hydra refused it. Hydra's other errors before the job (``model=vea`` lists the
    choices) are printed as Hydra prints them; a user's own HYDRA_FULL_ERROR turns all this off.
    """
    if _FULL_ERROR in os.environ:
        yield
        return
    os.environ[_FULL_ERROR] = os.environ[_OURS] = "1"
    try:
        yield
    except Exception as err:
        if _OURS not in os.environ:  # raised by the job, under a debugger: Hydra's way
            raise
        _job_started()
        key = _unknown_key(err)
        message = _did_you_mean(key, Path(conf_dir), config_name) if key else user_error(err)
        if message is not None:
            print(f"genlab: error: {message}", file=sys.stderr)
            sys.exit(1)
        if sys.gettrace() is not None:  # a debugger: Hydra raises too
            raise
        _hydra_report(err)
    finally:
        _job_started()


def _unknown_key(err: Exception) -> str | None:
    """The key of an override that Hydra refused because the config has no such key."""
    from hydra.errors import ConfigCompositionException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    cause = err.__cause__
    if isinstance(err, ConfigCompositionException) and isinstance(
        cause, (ConfigAttributeError, ConfigKeyError)
    ):
        return cause.full_key or None
    return None


def _did_you_mean(key: str, conf_dir: Path, config_name: str) -> str | None:
    """``<key> is not a key of the config; did you mean <closest>?``, from the config composed
    with the command's other overrides; None when ``key`` is there after all or the config
    cannot be composed (Hydra's own message then stands)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    argv = sys.argv[1:]
    for flag in ("-cn", "--config-name"):  # as _selections reads them
        if flag in argv[:-1]:
            config_name = argv[argv.index(flag) + 1]
    config_name = next(
        (a.partition("=")[2] for a in argv if a.startswith("--config-name=")), config_name
    )
    try:
        parsed = OverridesParser.create().parse_overrides(
            [a for a in argv if "=" in a and not a.startswith("-")]
        )
        # Without the refused override, and without sweeps (a,b), which compose cannot take.
        others = [
            o.input_line
            for o in parsed
            if not o.is_sweep_override()
            and o.key_or_group != key
            and not o.key_or_group.startswith(f"{key}.")
        ]
        with initialize_config_dir(config_dir=str(conf_dir.resolve()), version_base="1.3"):
            cfg = compose(config_name, others, return_hydra_config=key.startswith("hydra."))
    except Exception:
        return None
    keys = list(_dotted_keys(OmegaConf.to_container(cfg, resolve=False)))
    if key in keys:
        return None
    script = f"python {Path(sys.argv[0]).name} --cfg job"
    close = closest_keys(key, keys)
    if not close:
        return f"{key} is not a key of the config ({script} lists every key; +{key}=... adds one)."
    return (
        f"{key} is not a key of the config; did you mean {' or '.join(close)}? "
        f"({script} lists every key)"
    )


def _dotted_keys(node: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(node, dict):
        for name, value in node.items():
            yield f"{prefix}{name}"
            yield from _dotted_keys(value, f"{prefix}{name}.")


def _hydra_report(err: Exception) -> NoReturn:
    """Print ``err`` and exit 1, as Hydra does for an error before the job."""
    from hydra.errors import CompactHydraException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(err, CompactHydraException):
        print(err, file=sys.stderr)
        if isinstance(err.__cause__, OmegaConfBaseException):
            print(err.__cause__, file=sys.stderr)
        print(
            f"\nSet the environment variable {_FULL_ERROR}=1 for a complete stack trace.",
            file=sys.stderr,
        )
    else:
        traceback.print_exception(err)
    sys.exit(1)


# Configs that Hydra plugins provide (not files in conf/): (group, name) -> (module, what it is).
# They come with the `sweeps` extra; without it Hydra fails with a long "could not find" error.
SWEEPS_INSTALL = 'pip install -e ".[sweeps]"'
PLUGIN_CONFIGS = {
    ("hydra/sweeper", "genlab_optuna"): ("optuna", "the Optuna sweeper"),
    ("hydra/launcher", "joblib"): ("hydra_plugins.hydra_joblib_launcher", "the joblib launcher"),
    ("hydra/launcher", "submitit_local"): (
        "hydra_plugins.hydra_submitit_launcher",
        "the submitit launcher",
    ),
    ("hydra/launcher", "submitit_slurm"): (
        "hydra_plugins.hydra_submitit_launcher",
        "the submitit launcher",
    ),
}


def exit_if_plugin_missing(
    conf_dir: str | Path, config_name: str, argv: list[str] | None = None
) -> None:
    """Before Hydra runs: if the command selects a sweeper or launcher whose plugin is not
    installed, print one line naming the extra to install and exit 1.

    Follows the selections on the command line (``hparams_search=gan_optuna``,
    ``hydra/launcher=slurm``, ``experiment=...``) and in the primary config's defaults list
    through the config files in ``conf_dir`` (their own defaults lists, e.g. ``override
    /hydra/sweeper: genlab_optuna``). Not seen: configs found only through ``--config-dir`` / a
    ``hydra.searchpath``; Hydra's own error remains for those.
    """
    argv = sys.argv[1:] if argv is None else argv
    conf_dir = Path(conf_dir)
    for selection, (group, name) in _selections(conf_dir, config_name, argv):
        for module, what in _plugins_needed(conf_dir, group, name, set()):
            if not _installed(module):
                print(f"genlab: error: {selection} needs {what}: {SWEEPS_INSTALL}", file=sys.stderr)
                sys.exit(1)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # hydra_plugins itself absent: no plugin at all
        return False


def _selections(
    conf_dir: Path, config_name: str, argv: list[str]
) -> list[tuple[str, tuple[str, str]]]:
    """``("group=name", (group, name))`` for each config the command selects: the primary
    config's defaults, replaced by the command line's choices for the same group."""
    args = iter(argv)
    overrides = []
    for arg in args:  # --config-name/-cn pick another primary config
        if arg in ("-cn", "--config-name"):
            config_name = next(args, config_name)
        elif arg.startswith("--config-name="):
            config_name = arg.partition("=")[2]
        elif not arg.startswith("-"):
            overrides.append(arg)
    chosen: dict[str, list[str]] = {}
    for group, name in _defaults(conf_dir / f"{config_name}.yaml", ""):
        chosen.setdefault(group, []).append(name)
    for override in overrides:
        key, eq, value = override.lstrip("+").partition("=")
        key = key.partition("@")[0]
        if not eq or "." in key or key.startswith("~"):  # a value (a.b=1) or a deletion
            continue
        # A multirun sweeps a group over comma-separated choices: experiment=a,b
        chosen[key] = [v.strip() for v in value.split(",") if v.strip() not in ("", "null")]
    return [(f"{g}={n}", (g, n)) for g, names in chosen.items() for n in names]


def _plugins_needed(
    conf_dir: Path, group: str, name: str, seen: set[tuple[str, str]]
) -> Iterator[tuple[str, str]]:
    """The ``(module, what)`` plugins that selecting config ``group/name`` needs, following
    the defaults lists of the config files it pulls in."""
    if (group, name) in seen:
        return
    seen.add((group, name))
    if (group, name) in PLUGIN_CONFIGS:
        yield PLUGIN_CONFIGS[group, name]
        return
    for sub_group, sub_name in _defaults(conf_dir / group / f"{name}.yaml", group):
        yield from _plugins_needed(conf_dir, sub_group, sub_name, seen)


def _defaults(path: Path, group: str) -> list[tuple[str, str]]:
    """``(group, name)`` for each entry of a config file's defaults list (none when the file
    does not exist or does not parse: Hydra reports that itself)."""
    try:
        defaults = (yaml.safe_load(path.read_text()) or {}).get("defaults") or []
    except (OSError, yaml.YAMLError, AttributeError):
        return []
    entries = []
    for entry in defaults:
        if isinstance(entry, str):  # another config of the same group (wgan_gp -> gan_optuna)
            key, value = "", entry
        elif isinstance(entry, dict) and len(entry) == 1:  # [override] group: name
            key, value = next(iter(entry.items()))
            key = str(key).removeprefix("override ").strip().partition("@")[0]
        else:
            continue
        if not isinstance(value, str) or value in ("_self_", "null"):
            continue
        if value.startswith("/"):  # "/group/name"
            key, _, value = value.rpartition("/")
        sub_group = key.lstrip("/") if key.startswith("/") or not group else f"{group}/{key}"
        entries.append((sub_group.strip("/"), value))
    return entries

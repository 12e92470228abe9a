"""``python train.py resume=<run dir>``: continue a run with its own config, in its own folder.

    python train.py resume=outputs/train/runs/2026-11-29_15-30-00
    python train.py resume=latest          # the newest run (of this task) with a last.ckpt
    python train.py resume=outputs/train/runs/2026-11-29_15-30-00 trainer.max_epochs=20  # longer

The config comes from the run's ``last.ckpt`` (every checkpoint carries the resolved config), so
the original overrides need not be repeated; ``key=value`` overrides on the resume command are
applied on top. Checkpoints, ``metrics.csv``, samples and the resume command's own log continue
in the run directory named on the command line, wherever it now is: paths stored in the
checkpoint are moved there, never followed.
"""

from __future__ import annotations

import logging
import os
import shlex
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from genlab.checkpoints.keys import CONFIG_FILE_KEY, CONFIG_KEY
from genlab.checkpoints.load import read_checkpoint
from genlab.checkpoints.moved import renamed_targets
from genlab.checkpoints.trust import check_stored_config, foreign_paths
from genlab.errors import ConfigError
from genlab.resume.run_dir import check_writable
from genlab.utils.atomic import atomic_path
from genlab.utils.hashing import file_sha256

log = logging.getLogger(__name__)

# Keys of the resume command that are not settings of the resumed run.
_NOT_CARRIED = ("resume", "ckpt_path", "trust_checkpoint", "hydra.")


def latest_run(runs_dir: Path) -> Path:
    candidates = sorted(runs_dir.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise ConfigError(
            f"resume=latest: no run under {runs_dir} has checkpoints/last.ckpt. Name the run "
            "directory instead: resume=outputs/train/runs/<time>."
        )
    return candidates[-1].parents[1]


def run_dir_of(checkpoint: Path) -> Path:
    """The run directory a checkpoint belongs to (``<run>/checkpoints/last.ckpt`` -> ``<run>``)."""
    folder = checkpoint.parent
    return folder.parent if folder.name == "checkpoints" else folder


def relocate(node: Any, old: str, new: str) -> Any:
    """``node`` with every path under ``old`` moved under ``new`` (the stored config is
    resolved: checkpoint, sample and log folders are absolute paths of where the run was)."""
    if isinstance(node, dict):  # keys too: ModelCheckpoint's best_k_models is {path: score}
        return {relocate(k, old, new): relocate(v, old, new) for k, v in node.items()}
    if isinstance(node, list):
        return [relocate(v, old, new) for v in node]
    if isinstance(node, str) and (node == old or node.startswith(old.rstrip("/") + "/")):
        return new + node[len(old.rstrip("/")) :]
    return node


def _copies(stored: dict, key: str) -> list[str]:
    """Other keys of the stored (resolved) config that hold ``key``'s value under its name,
    i.e. were interpolated from it (``model.generator.latent_dim`` from ``model.latent_dim``):
    an override of ``key`` would not reach them."""
    leaf, old = key.rsplit(".", 1)[-1], OmegaConf.select(OmegaConf.create(stored), key)
    found: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{path}.{k}" if path else str(k))
        elif path != key and path.rsplit(".", 1)[-1] == leaf and node == old:
            found.append(path)

    # Nets and data are built from model.* and data.*; elsewhere equal values are coincidence.
    if key.startswith(("model.", "data.")) and old is not None and not isinstance(old, dict):
        walk(stored, "")
    return found


def last_checkpoint(resume: str | Path) -> Path:
    """``resume`` may name the run directory, its checkpoints/ folder or a checkpoint file."""
    path = Path(resume)
    for candidate in (path, path / "last.ckpt", path / "checkpoints" / "last.ckpt"):
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"resume={resume}: no checkpoint there. Give a run directory holding "
        "checkpoints/last.ckpt (outputs/train/runs/<time>), or the .ckpt file itself."
    )


def resume_config(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """The config to continue ``cfg.resume`` with: the run's stored config + ``overrides``.

    The stored config is untrusted input (a run folder may come from someone else): it is
    checked before anything is built from it, and no path it names is followed. Paths of the
    run move to the folder named on the command line, the ``paths`` group is this machine's, and
    any other path outside the run, the data and the cache folders is refused unless the
    command sets that key again (or ``trust_checkpoint=true``)."""
    resume = cfg.resume
    if str(resume) == "latest":
        resume = latest_run(Path(cfg.paths.log_dir) / cfg.task_name / "runs")
    ckpt = last_checkpoint(resume)
    trust = cfg.get("trust_checkpoint") is True
    checkpoint = read_checkpoint(ckpt)
    stored = renamed_targets(checkpoint[CONFIG_KEY])
    check_stored_config(stored, ckpt, trust=trust)
    # Continue where the user pointed, wherever the run was when the checkpoint was written.
    # The folder the user named, links not followed: a last.ckpt that is a link elsewhere must
    # not move the resumed run's writes there (resolvers.run_dir agrees: Hydra's run dir).
    here = run_dir_of(Path(os.path.abspath(ckpt)))
    for folder in (here, here / "checkpoints"):
        reason = check_writable(folder)
        if reason is not None:
            raise ConfigError(
                f"resume={cfg.resume}: cannot write {folder} ({reason}); the resumed run would "
                "lose its checkpoints. Make it writable, or copy the run folder somewhere "
                "writable and resume the copy."
            )
    warn_if_config_edited(here, checkpoint)
    _relocate_callback_states(ckpt, checkpoint, stored, here, trust)
    local = {k: str(v) for k, v in OmegaConf.to_container(cfg.paths, resolve=True).items()}
    local["output_dir"] = str(here)
    resumed = OmegaConf.create(_localize(stored, local))
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overridden = []
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if key.startswith(_NOT_CARRIED):
            continue
        if isinstance(OmegaConf.select(resumed, key), DictConfig):
            raise ConfigError(
                f"{key}={override.value()} changes a config group, which a resumed run cannot: "
                "its nets and optimizers are in the checkpoint. Start a new run instead, or "
                f"override single keys ({key}.<name>=...)."
            )
        copies = _copies(stored, key)
        if copies and OmegaConf.select(resumed, key) != override.value():
            raise ConfigError(
                f"{key}={override.value()}: the run built {', '.join(copies)} from it, so the "
                "checkpoint's nets and data are shaped for the old value. A resumed run keeps "
                "them; start a new run to change it."
            )
        OmegaConf.update(resumed, key, override.value(), force_add=True)
        overridden.append(key)
    if not trust:
        _refuse_foreign_paths(resumed, [here, local["data_dir"], local["cache_dir"]], overridden)
    with open_dict(resumed):
        resumed.ckpt_path = str(ckpt)
        resumed.resume = None
    log.info("resuming %s in %s", ckpt, resumed.paths.output_dir)
    return resumed


def _localize(stored: dict, local: dict[str, str]) -> dict:
    """``stored`` with the run's own folders moved to this machine's: the run folder to where
    it is now, the data, cache, log and root folders to this config's ``paths``."""
    old = stored.get("paths") or {}
    moves = [(str(old[k]), local[k]) for k in local if isinstance(old.get(k), str) and old[k]]
    node = stored
    for before, after in sorted(moves, key=lambda m: -len(m[0])):  # the most specific first
        if before.startswith("/") and before != "/":
            node = relocate(node, before, after)
    return {**node, "paths": dict(local)}


def _refuse_foreign_paths(resumed: DictConfig, allowed: list, overridden: list[str]) -> None:
    """A stored path outside the run (a sample folder, a logger's save_dir) would be written to
    or read from at the checkpoint author's choosing: refused unless the command sets it."""
    config = OmegaConf.to_container(resumed, resolve=False)
    for key, value in foreign_paths(config, allowed):
        if key.startswith("paths.") or any(key == k or key.startswith(f"{k}.") for k in overridden):
            continue
        raise ConfigError(
            f"resume: the stored config's {key}={value} points outside the run folder, its data "
            "and cache folders; a resumed run does not follow stored paths. Set it on the "
            f"command line ({key}=<path>) if you mean it, or trust_checkpoint=true to accept "
            "the run's config as it is (docs/security.md)."
        )


def _relocate_callback_states(
    path: Path, checkpoint: dict, stored: dict, here: Path, trust: bool
) -> None:
    """Callback states hold paths too (ModelCheckpoint's best and top-k files): for a run folder
    that was moved or copied, rewrite ``last.ckpt`` with them moved here, so the best score and
    checkpoint carry over exactly instead of pointing at the old folder. A path outside the run
    is refused, as in the config."""
    states = checkpoint.get("callbacks")
    old = (stored.get("paths") or {}).get("output_dir")
    if not isinstance(states, dict) or not isinstance(old, str) or not old.startswith("/"):
        return
    moved = relocate(states, old, str(here)) if old != str(here) else states
    if not trust:
        for text in _strings(moved):
            if foreign_paths({"": text}, [here]):
                raise ConfigError(
                    f"resume: {path}'s callback states name {text}, outside the run folder; a "
                    "resumed run does not follow stored paths. Resume a checkpoint written by "
                    "genlab's train.py, or trust_checkpoint=true if you trust its author "
                    "(docs/security.md)."
                )
    if old != str(here) and any(t.startswith(old) for t in _strings(states)):
        checkpoint["callbacks"] = moved
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)
        log.info("moved the callback states of %s from %s to %s", path, old, here)


def _strings(node: Any) -> list[str]:
    """Every string of a tree of dicts and lists, keys included."""
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(node, (list, tuple)):
        return [s for v in node for s in _strings(v)]
    return [node] if isinstance(node, str) else []


def warn_if_config_edited(run_dir: Path, checkpoint: dict) -> None:
    """``.hydra/config.yaml`` is a record of how the run started; a resume takes its config from
    the checkpoint. A hand edit there would be ignored silently: say so."""
    recorded = checkpoint.get(CONFIG_FILE_KEY)
    path = run_dir / ".hydra" / "config.yaml"
    if not recorded or not path.is_file():
        return
    if file_sha256(path) != recorded:
        log.warning(
            "%s was changed after the run started; a resumed run takes its config from "
            "checkpoints/last.ckpt and ignores that file. Change settings on the resume "
            "command instead (python train.py resume=%s key=value).",
            path,
            shlex.quote(str(run_dir)),
        )

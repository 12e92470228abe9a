"""Every entry genlab adds to a Lightning checkpoint, registered in one table.

Lightning's own entries (``LIGHTNING_KEYS``: the weights, optimizers, loop state, each callback's
``state_dict``) need no key here. What a feature adds at the top level of the checkpoint dict is
registered below, with the module that writes it and what it holds, and named nowhere else:
``tests/test_architecture.py`` refuses a custom key written as a literal (or as a constant of
its own) outside this package, and a registered key written by any module but its owner. So a
reader sees in one place what a ``.ckpt`` holds, docs/security.md lists the same table (a test
compares them), and a new feature cannot silently reuse another's key.

A feature that needs a new entry adds one ``register(...)`` line here and writes it through the
returned constant in its ``on_save_checkpoint``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CheckpointKey:
    """One top-level entry of a checkpoint that genlab (not Lightning) writes."""

    name: str  # the key in the checkpoint dict
    owner: str  # the module (or package) whose on_save_checkpoint writes it
    holds: str  # what it holds, one line (docs/security.md shows it)


# Lightning's own entries (pytorch_lightning's checkpoint connector; the datamodule's and the
# precision plugin's state go under their class names, callbacks' under "callbacks").
LIGHTNING_KEYS = frozenset(
    {
        "epoch",
        "global_step",
        "pytorch-lightning_version",
        "state_dict",
        "loops",
        "callbacks",
        "optimizer_states",
        "lr_schedulers",
        "hparams_name",
        "hyper_parameters",
        "hparams_type",
        "datamodule_hparams_name",
        "datamodule_hyper_parameters",
        "datamodule_hparams_type",
        "native_amp_scaling_state",  # read from checkpoints of older Lightning versions
    }
)

KEYS: dict[str, CheckpointKey] = {}
_STORED_CONFIG = "genlab.resume.stored_config"
_CSV = "genlab.loggers.metrics_csv"
_FRAMEWORK = "genlab.callbacks.framework."


def register(name: str, owner: str, holds: str) -> str:
    """Add ``name`` to ``KEYS`` (written by ``owner``) and return it, for a module constant."""
    if name in KEYS or name in LIGHTNING_KEYS:
        raise ValueError(f"checkpoint key {name!r} is taken: give the new entry its own name")
    KEYS[name] = CheckpointKey(name, owner, holds)
    return name


# Each line: the key, the module that writes it, what it holds (docs/security.md shows them).
# sample.py, eval.py and resume=<run> rebuild the run from it.
CONFIG_KEY = register("genlab_config", _STORED_CONFIG, "the run's resolved config (a dict)")
# A resume warns about hand edits of .hydra/config.yaml made since the run started.
CONFIG_FILE_KEY = register(
    "genlab_config_file_sha256",
    _STORED_CONFIG,
    "SHA256 of .hydra/config.yaml at the start",
)
# So a resume continues the same W&B run.
WANDB_ID_KEY = register("wandb_run_id", "genlab.loggers", "the W&B run id")
# So a resumed run's metrics.csv and monitor equal an uninterrupted run's.
STEP_KEY = register("genlab_step", _CSV, "the training batches metrics.csv has rows for")
METRICS_KEY = register("genlab_callback_metrics", _CSV, "the callback metrics at the save")
# Saved just before a validation that a stop interrupted: the resume repeats it.
VALIDATION_PENDING_KEY = register(
    "genlab_validation_pending",
    "genlab.resume.progress",
    "true when a stopped validation is due",
)
# Metrics a model computes on only some batches (log_latest) keep their latest value.
LATEST_METRICS_KEY = register(
    "genlab_latest_metrics",
    _FRAMEWORK + "latest_metrics",
    "latest values of log_latest metrics",
)
# Python, NumPy, torch (and CUDA) generators: a resumed run draws the same noise.
RNG_KEY = register("rng_states", "genlab.resume.rng", "the global RNG states")
# The privacy accountant's history: the budget spent travels with the weights.
PRIVACY_KEY = register("privacy", "genlab.privacy", "the DP accountant's history, epsilon spent")
# Marks a slim export of pretrained/ (weights, config and this entry only).
PRETRAINED_KEY = register("genlab_pretrained", "scripts.export_pretrained", "a pretrained/ name")

"""The ``extras`` group of every entry point: hide known noise, print the config."""

from __future__ import annotations

import warnings

from omegaconf import DictConfig, OmegaConf

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
    """The ``extras`` group of every entry point: hide known noise, print the config. A task
    that checks its arguments after loading something calls the two halves apart."""
    silence_warnings_if_asked(cfg)
    print_config_if_asked(cfg)


def silence_warnings_if_asked(cfg: DictConfig) -> None:
    if (cfg.get("extras") or {}).get("ignore_warnings"):
        silence_known_warnings()


def print_config_if_asked(cfg: DictConfig) -> None:
    if (cfg.get("extras") or {}).get("print_config"):
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

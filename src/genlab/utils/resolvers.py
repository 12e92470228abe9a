"""OmegaConf resolvers used by ``conf/`` (registered when ``genlab`` is imported)."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf


def project_root() -> str:
    """The folder holding ``conf/``: $GENLAB_ROOT, else the checkout genlab was installed from,
    else the current directory. Lets ``python /path/to/train.py`` find ``data/`` from anywhere."""
    if "GENLAB_ROOT" in os.environ:
        return os.environ["GENLAB_ROOT"]
    checkout = Path(__file__).resolve().parents[3]  # src/genlab/utils/resolvers.py -> repo
    if (checkout / "conf" / "train.yaml").exists():
        return str(checkout)
    return os.getcwd()


def _register() -> None:
    for name, fn in {"project_root": project_root, "mul": lambda a, b: a * b}.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


_register()

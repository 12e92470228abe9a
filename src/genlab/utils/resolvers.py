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


def image_size_of(path: str) -> int:
    """``${image_size_of:${data.path}}``: the net size that suits an image folder."""
    from genlab.data.image_folder import infer_image_size  # lazy: PIL only when asked

    return infer_image_size(path)


def _register() -> None:
    # image_size_of scans a folder: cache its answer (per config) instead of rescanning on every
    # access of data.image_size and of the nets' interpolations of it.
    resolvers = {
        "project_root": (project_root, False),
        "mul": (lambda a, b: a * b, False),
        "image_size_of": (image_size_of, True),
    }
    for name, (fn, cached) in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn, use_cache=cached)


_register()

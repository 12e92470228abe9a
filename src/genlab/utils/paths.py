"""Where the project lives."""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> str:
    """The folder holding ``conf/``: $GENLAB_ROOT, else the checkout genlab was installed from,
    else the current directory. Lets ``python /path/to/train.py`` find ``data/`` from anywhere."""
    if "GENLAB_ROOT" in os.environ:
        return os.environ["GENLAB_ROOT"]
    checkout = Path(__file__).resolve().parents[3]  # src/genlab/utils/paths.py -> repo
    if (checkout / "conf" / "train.yaml").exists():
        return str(checkout)
    return os.getcwd()

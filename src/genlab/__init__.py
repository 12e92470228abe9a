"""genlab: a Hydra + PyTorch Lightning template for generative image models.

A trained model, after the trust check of docs/security.md:

    model, cfg = genlab.load_model("outputs/train/runs/<time>/checkpoints/last.ckpt")
"""

from __future__ import annotations

from typing import Any

from genlab import resolvers as _resolvers  # noqa: F401  (registers ${project_root:} etc.)

__version__ = "0.1.0"
__all__ = ["load_model"]


def __getattr__(name: str) -> Any:
    # genlab.load_model on first use: `import genlab` stays light (no torch, no Lightning).
    if name == "load_model":
        from genlab.checkpoints.load import load_model

        return load_model
    raise AttributeError(f"module 'genlab' has no attribute {name!r}")

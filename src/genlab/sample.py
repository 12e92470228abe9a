"""``genlab.sample.run``: draw samples from a checkpoint into a file.

    python sample.py ckpt_path=outputs/train/runs/<time>/checkpoints/last.ckpt n=10000 out=samples.npy

The suffix of ``out`` picks the format: ``.npy`` (float32 [n, C, H, W] in [0, 1]), ``.pt``
(the same tensor) or ``.png`` (one grid). The model class comes from the checkpoint.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torchvision.utils import save_image

from genlab.errors import ConfigError
from genlab.utils.checkpoint import load_model

log = logging.getLogger(__name__)
FORMATS = (".npy", ".pt", ".png")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device} but no CUDA GPU is available: use device=cpu.")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device=mps but Apple's MPS backend is not available: use device=cpu.")
    return torch.device(device)


def iter_samples(model, n: int, seed: int, batch_size: int) -> Iterator[torch.Tensor]:
    """``n`` samples as CPU batches. All latents are drawn first from one seeded generator, so
    the images do not depend on ``batch_size`` or the device."""
    z = torch.randn(n, model.latent_dim, generator=torch.Generator().manual_seed(seed))
    for zb in z.split(batch_size):
        with torch.no_grad():
            yield model.generate(zb.to(model.device)).clamp(0, 1).cpu()


def draw(model, n: int, seed: int, batch_size: int) -> torch.Tensor:
    """``n`` samples on the CPU, the concatenation of ``iter_samples``."""
    return torch.cat(list(iter_samples(model, n, seed, batch_size)))


def run(cfg: DictConfig) -> Path:
    out = Path(cfg.out)
    if out.suffix not in FORMATS:
        raise ConfigError(f"out={out}: the suffix must be one of {FORMATS}.")
    if cfg.n < 1:
        raise ConfigError(f"n={cfg.n}: ask for at least one sample.")
    device = resolve_device(str(cfg.device))
    model, _ = load_model(cfg.ckpt_path, map_location=device)
    start = time.perf_counter()
    samples = draw(model, cfg.n, cfg.seed, cfg.batch_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        np.save(out, samples.numpy().astype(np.float32))
    elif out.suffix == ".pt":
        torch.save(samples, out)
    else:
        save_image(samples, out, nrow=max(1, int(cfg.n**0.5)))
    log.info(
        "wrote %d samples %s in [%.3f, %.3f] to %s (%.1fs on %s)",
        cfg.n,
        tuple(samples.shape),
        samples.min(),
        samples.max(),
        out,
        time.perf_counter() - start,
        device,
    )
    return out

"""``genlab.sample.run``: draw samples from a checkpoint into a file.

    python sample.py ckpt_path=outputs/train/runs/<time>/checkpoints/last.ckpt n=10000 out=samples.npy

The suffix of ``out`` picks the format: ``.npy`` (float32 [n, C, H, W] in [0, 1]), ``.pt``
(the same tensor) or ``.png`` (one grid). The model class comes from the checkpoint.

    python sample.py ckpt_path=... mode=interpolate n=8 steps=10 out=walks.png

draws ``n`` rows of ``steps`` images along spherical paths between random latents.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torchvision.utils import save_image

from genlab.errors import ConfigError
from genlab.metrics.sampling import draw, finite_samples
from genlab.resume.checkpoint import load_model
from genlab.utils.atomic import atomic_path
from genlab.utils.ranges import Arg, check_args, choice, integer, output_file, pattern, seed
from genlab.utils.validation import check_required

log = logging.getLogger(__name__)
FORMATS = (".npy", ".pt", ".png")
MODES = ("samples", "interpolate")

# sample.py's arguments (conf/sample.yaml), checked before the checkpoint is loaded; a key
# missing from a hand-built config keeps the default run() gives it.
ARGS = {
    "n": Arg("the number of samples (rows of walks with mode=interpolate)", integer(low=1), "64"),
    "batch_size": Arg("the samples per forward pass", integer(low=1), "1000"),
    "seed": Arg("the seed of the latents", seed(), "0"),
    "device": Arg(
        "where the model runs",
        pattern(r"auto|cpu|mps|cuda(:\d+)?", "auto, cpu, mps, cuda or cuda:<index>"),
        "cpu",
    ),
    "out": Arg("the file the samples are written to", output_file(FORMATS), "samples.npy"),
    "mode": Arg("what to draw", choice(MODES), "samples"),
    "steps": Arg("the images per walk of mode=interpolate", integer(low=2), "10"),
}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device} but no CUDA GPU is available: use device=cpu.")
    index = device.partition(":")[2]
    if index and int(index) >= torch.cuda.device_count():
        raise ConfigError(
            f"device={device} but only {torch.cuda.device_count()} GPU(s) are visible "
            "(indices from 0): pick another index or check CUDA_VISIBLE_DEVICES."
        )
    if device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device=mps but Apple's MPS backend is not available: use device=cpu.")
    return torch.device(device)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation, rows of ``a`` to rows of ``b`` at fractions ``t``: Gaussian
    latents live near a sphere, and a straight line between two of them cuts through its
    low-density interior (White, 2016)."""
    a_n, b_n = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((a_n * b_n).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    t = t.view(-1, 1, 1)  # [steps, 1, 1] against [1, rows, D]
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


@torch.no_grad()
def interpolate(model, rows: int, steps: int, seed: int) -> torch.Tensor:
    """``rows`` walks of ``steps`` images between pairs of seeded latents, row-major."""
    g = torch.Generator().manual_seed(seed)
    a, b = (torch.randn(1, rows, model.latent_dim, generator=g) for _ in range(2))
    z = slerp(a, b, torch.linspace(0, 1, steps)).transpose(0, 1).reshape(-1, model.latent_dim)
    return model.generate(z.to(model.device, model.dtype)).float().clamp(0, 1).cpu()


def run(cfg: DictConfig) -> Path:
    check_required(cfg)  # ckpt_path=??? : one line, not omegaconf's traceback
    check_args(cfg, ARGS)
    out = Path(cfg.out).expanduser()
    mode = cfg.get("mode", "samples")
    device = resolve_device(str(cfg.device))
    model, _ = load_model(cfg.ckpt_path, map_location=device)
    if mode == "interpolate" and not hasattr(model, "generate"):
        raise ConfigError(
            f"mode=interpolate walks between latents: {type(model).__name__} has no "
            "generate(z) and latent_dim (docs/models.md). Use mode=samples."
        )
    start = time.perf_counter()
    where = f"ckpt_path={cfg.ckpt_path}"  # a diverged model's NaN images are not written
    if mode == "interpolate":
        steps = cfg.get("steps", 10)
        samples = next(finite_samples([interpolate(model, cfg.n, steps, cfg.seed)], where))
        nrow = steps
    else:
        samples = draw(model, cfg.n, cfg.seed, cfg.batch_size, where)
        nrow = max(1, int(cfg.n**0.5))
    with atomic_path(out) as tmp:  # a killed job leaves no half-written sample file
        if out.suffix == ".npy":
            np.save(tmp, samples.numpy().astype(np.float32))
        elif out.suffix == ".pt":
            torch.save(samples, tmp)
        else:
            save_image(samples, tmp, nrow=nrow)
    log.info(
        "wrote %d samples %s in [%.3f, %.3f] to %s (%.1fs on %s)",
        len(samples),
        tuple(samples.shape),
        samples.min(),
        samples.max(),
        out,
        time.perf_counter() - start,
        device,
    )
    return out

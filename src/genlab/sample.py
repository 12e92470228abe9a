"""``genlab.sample.run``: draw samples from a checkpoint into a file.

    python sample.py ckpt_path=outputs/train/runs/<time>/checkpoints/last.ckpt n=10000 out=samples.npy

The suffix of ``out`` picks the format: ``.npy`` (float32 [n, C, H, W] in [0, 1]), ``.pt``
(the same tensor) or ``.png`` (one grid). The model class comes from the checkpoint.

    python sample.py ckpt_path=... mode=interpolate n=8 steps=10 out=walks.png

draws ``n`` rows of ``steps`` images along spherical paths between random latents.

A conditional model (``num_classes`` > 0) is asked for classes with ``labels``:

    python sample.py ckpt_path=... labels=[3,3,7]              # 3 images: a 3, a 3 and a 7
    python sample.py ckpt_path=... labels=[3,7] n=10           # 10 images: 3, 7, 3, 7, ...
    python sample.py ckpt_path=... labels=all per_class=10     # a row of 10 per class
    python sample.py ckpt_path=... mode=interpolate labels=[3] n=8   # 8 walks, all of class 3

Image i is of class ``labels[i % len(labels)]``; ``labels=all`` writes class c's ``per_class``
images as row c, and column j is the same latent in every row (the images of
``labels=[c] n=per_class``). An unconditional model refuses ``labels``.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torchvision.utils import save_image

from genlab.checkpoints.load import load_model
from genlab.config.arguments import Arg, check_args
from genlab.config.cli import file_size_limit
from genlab.config.rules import COUNT, SEED, OneOf, OrNone, OutputFile, Pattern, Range, is_int
from genlab.config.validation import check_required
from genlab.errors import ConfigError
from genlab.metrics.sampling import (
    check_labels,
    draw,
    draw_labels,
    finite_samples,
    iter_samples,
    num_classes,
)
from genlab.utils.atomic import atomic_path

log = logging.getLogger(__name__)
FORMATS = (".npy", ".pt", ".png")
MODES = ("samples", "interpolate")
DEFAULT_N = 64  # n=null without labels


class Labels:
    """``labels=``: null (none asked for), ``all``, one class index or a list of them."""

    def violation(self, value: Any) -> str | None:
        if value is None or value == "all" or (is_int(value) and value >= 0):
            return None
        if isinstance(value, list) and value and all(is_int(v) and v >= 0 for v in value):
            return None
        return f"needs {self.describe()}"

    def describe(self) -> str:
        return "all, or a list of class indices >= 0"


# sample.py's arguments (conf/sample.yaml), checked before the checkpoint is loaded; a key
# missing from a hand-built config keeps the default run() gives it.
ARGS = {
    "n": Arg(
        "the number of samples (rows of walks with mode=interpolate); null: 64, or one per "
        "label of labels=[...]",
        OrNone(COUNT),
        "64",
    ),
    "labels": Arg("the classes a conditional model is asked for", Labels(), "[3,3,7]"),
    "per_class": Arg("the images of each class with labels=all", COUNT, "10"),
    "batch_size": Arg("the samples per forward pass", COUNT, "1000"),
    "seed": Arg("the seed of the latents", SEED, "0"),
    "device": Arg(
        "where the model runs",
        Pattern(r"auto|cpu|mps|cuda(:\d+)?", "auto, cpu, mps, cuda or cuda:<index>"),
        "cpu",
    ),
    "out": Arg("the file the samples are written to", OutputFile(*FORMATS), "samples.npy"),
    "mode": Arg("what to draw", OneOf(*MODES), "samples"),
    "steps": Arg("the images per walk of mode=interpolate", Range(ge=2, integer=True), "10"),
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
def interpolate(
    model, rows: int, steps: int, seed: int, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """``rows`` walks of ``steps`` images between pairs of seeded latents, row-major. A
    conditional model keeps row i in class ``labels[i]`` (without labels, classes drawn
    uniformly from the same seeded generator after the latents, as ``draw`` does)."""
    g = torch.Generator().manual_seed(seed)
    a, b = (torch.randn(1, rows, model.latent_dim, generator=g) for _ in range(2))
    z = slerp(a, b, torch.linspace(0, 1, steps)).transpose(0, 1).reshape(-1, model.latent_dim)
    z = z.to(model.device, model.dtype)
    classes = num_classes(model)
    if classes and labels is None:
        labels = draw_labels(classes, rows, g)
    if labels is None:
        images = model.generate(z)
    else:
        images = model.generate(z, labels.repeat_interleave(steps).to(model.device))
    return images.float().clamp(0, 1).cpu()


def asked_labels(spec: Any, n: int | None, classes: int, where: str) -> torch.Tensor | None:
    """The classes of ``labels=spec`` (checked against the model's ``classes``; ``where``
    names its checkpoint): None when none are asked for, every class once for ``all``, else
    ``n`` images (``len(spec)`` when n is null) cycling through the listed classes."""
    if spec is None:
        return None
    shown = _shown(spec)
    if not classes:
        raise ConfigError(
            f"labels={shown}: the model of {where} is unconditional (it has no classes to ask "
            "for): drop labels=, or sample a checkpoint of a conditional model (train.py "
            "model=cgan or model=cvae)."
        )
    if spec == "all":
        if n is not None:
            raise ConfigError(
                f"labels=all n={n}: labels=all draws per_class images of each of the model's "
                f"{classes} classes, one row per class: set per_class= instead of n= (or list "
                "the classes, labels=[...] n=..., for n images cycling through them)."
            )
        return torch.arange(classes)
    listed = torch.tensor([spec] if is_int(spec) else list(spec), dtype=torch.long)
    missing = sorted({c for c in listed.tolist() if c >= classes})
    if missing:
        raise ConfigError(
            f"labels={shown}: the model of {where} has {classes} classes (0..{classes - 1}), "
            f"not {', '.join(map(str, missing))}: ask for classes it was trained on."
        )
    count = len(listed) if n is None else n
    return check_labels(listed[torch.arange(count) % len(listed)], count, classes)


def _shown(spec: Any) -> str:
    """``labels=`` as typed on the command line: all, 3, [3,3,7]."""
    return f"[{','.join(map(str, spec))}]" if isinstance(spec, list) else str(spec)


def run(cfg: DictConfig) -> Path:
    check_required(cfg)  # ckpt_path=??? : one line, not omegaconf's traceback
    check_args(cfg, ARGS)
    out = Path(cfg.out).expanduser()
    mode = cfg.get("mode", "samples")
    n, spec = cfg.get("n"), cfg.get("labels")
    if isinstance(spec, ListConfig):
        spec = OmegaConf.to_container(spec)
    per_class, steps = cfg.get("per_class", 10), cfg.get("steps", 10)
    device = resolve_device(str(cfg.device))
    model, _ = load_model(
        cfg.ckpt_path, map_location=device, trust=cfg.get("trust_checkpoint") is True
    )
    where = f"ckpt_path={cfg.ckpt_path}"  # a diverged model's NaN images are not written
    labels = asked_labels(spec, n, num_classes(model), where)
    if mode == "interpolate" and not hasattr(model, "generate"):
        raise ConfigError(
            f"mode=interpolate walks between latents: {type(model).__name__} has no "
            "generate(z) and latent_dim (docs/models.md). Use mode=samples."
        )
    # rows: of walks (interpolate), of classes (labels=all) or of a square grid (samples).
    if spec == "all":
        rows = len(labels)
        columns, key = (steps, "steps") if mode == "interpolate" else (per_class, "per_class")
        count = f"labels=all ({rows} classes) x {key}={columns}"
    else:
        rows = len(labels) if labels is not None else DEFAULT_N if n is None else n
        columns = steps if mode == "interpolate" else 1
        count = f"n={rows} x steps={steps}" if mode == "interpolate" else f"n={rows}"
    shape = tuple(next(iter_samples(model, 1, cfg.seed, 1)).shape[1:])  # one image: C, H, W
    check_size(rows * columns, shape, getattr(model, "latent_dim", 0) or 0, out, count)
    start = time.perf_counter()
    if mode == "interpolate":
        if spec == "all":  # row c is labels=[c]'s walk: one walk, one class per row
            walks = [interpolate(model, 1, steps, cfg.seed, c.view(1)) for c in labels]
        else:
            walks = [interpolate(model, rows, steps, cfg.seed, labels)]
        samples = torch.cat(list(finite_samples(walks, where)))
        nrow = steps
    elif spec == "all":  # row c is labels=[c] n=per_class: column j is one latent throughout
        samples = torch.cat(
            [
                draw(model, per_class, cfg.seed, cfg.batch_size, where, c.repeat(per_class))
                for c in labels
            ]
        )
        nrow = per_class
    else:
        samples = draw(model, rows, cfg.seed, cfg.batch_size, where, labels=labels)
        nrow = max(1, int(rows**0.5))
    try:
        with atomic_path(out) as tmp:  # a killed job leaves no half-written sample file
            if out.suffix == ".npy":
                np.save(tmp, samples.numpy().astype(np.float32))
            elif out.suffix == ".pt":
                torch.save(samples, tmp)
            else:
                save_image(samples, tmp, nrow=nrow)
    except OSError as err:  # a failed write() names no file: name out (full disk, ulimit -f)
        if err.filename or err.errno is None:
            raise
        raise OSError(err.errno, err.strerror, str(out)) from err
    if labels is not None:
        log.info(
            "classes: labels=%s (%s)",
            _shown(spec),
            "one per row" if spec == "all" else "image i of labels[i % len(labels)]",
        )
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


def check_size(images: int, shape: tuple[int, ...], latent_dim: int, out: Path, count: str) -> None:
    """Refuse, before sampling, ``images`` samples of ``shape`` (C, H, W) that cannot fit in
    memory, on the disk of ``out``, or under the file-size limit: ``n=1000000000`` would
    otherwise end in an allocator traceback after hours of work. ``count`` names n (and steps)
    in the message."""
    pixels = images * int(np.prod(shape)) * 4  # float32
    # draw() holds its batches and their concatenation at once, as the .npy write holds the
    # samples and their float32 copy; a .png grid pads each image by 2 pixels, in RGB, twice
    # (float grid, then its scaled copy); the latents are drawn up front.
    memory = 2 * pixels + images * latent_dim * 4
    if out.suffix == ".png":
        memory = max(memory, pixels + 2 * images * 3 * (shape[1] + 2) * (shape[2] + 2) * 4)
    what = f"{count} samples of {'x'.join(map(str, shape))}"
    available = _available_memory()
    if available is not None and memory > available:
        raise ConfigError(
            f"{what} need about {_size(memory)} of memory to draw and write as {out.suffix} "
            f"({_size(pixels)} of float32 pixels), but {_size(available)} is available: lower "
            "n, or write several files with different seed= values."
        )
    if out.suffix == ".png":  # compressed: its size is not known before
        return
    folder = out.parent
    while not folder.exists() and folder != folder.parent:  # created at the write
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if pixels > free:
        raise ConfigError(
            f"{what} make a {_size(pixels)} {out.suffix} file, but {folder} has {_size(free)} "
            "free: lower n, or point out= at a disk with space."
        )
    limit = file_size_limit()
    if limit is not None and pixels > limit:
        raise ConfigError(
            f"{what} make a {_size(pixels)} {out.suffix} file, but this process may write "
            f"files of {_size(limit)} at most: raise the limit (ulimit -f unlimited) or lower n."
        )


def _available_memory() -> int | None:
    """Bytes this process can still allocate: Linux's MemAvailable, capped by the memory limit
    of its cgroup (a SLURM job's, a container's); None where unknown (not Linux)."""
    try:
        found = re.search(r"^MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        groups = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    if found is None:
        return None
    available = int(found[1]) * 1024
    for line in groups:  # "0::/path" (cgroup v2) or "4:memory:/path" (v1)
        _, controllers, path = line.split(":", 2)
        if controllers:
            if "memory" not in controllers.split(","):
                continue
            root, name = Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes"
        else:
            root, name = Path("/sys/fs/cgroup"), "memory.max"
        # A container sees its own cgroup at the root; "max" (v2) means no limit.
        for folder in (root / path.lstrip("/"), root):
            try:
                available = min(available, int((folder / name).read_text()))
                break
            except (OSError, ValueError):
                continue
    return available


def _size(n: int) -> str:
    value, unit = float(n), "bytes"
    for bigger in ("kB", "MB", "GB", "TB", "PB"):
        if value < 1000:
            break
        value, unit = value / 1000, bigger
    return f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"

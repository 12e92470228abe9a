"""``genlab.evaluate.run``: score a checkpoint, or any file of samples, with trusted metrics.

    python eval.py ckpt_path=outputs/train/runs/<time>/checkpoints/best.ckpt
    python eval.py ckpt_path=... metrics=[fid,kid,is,pr,coverage,nll] num_samples=10000
    python eval.py samples=other_project_samples.npy data=mnist

Sample metrics (``fid kid is pr coverage``) compare ``num_samples`` seeded samples (or the file's)
with the *test* split through ``features`` (mnist_classifier by default; inception for numbers
comparable with papers); the real features are cached. Model metrics run ``trainer.test``;
each model declares the ones its ``test_step`` computes (``model_metrics``, docs/models.md):
``nll`` (VAE importance-weighted bound with ``nll_samples`` samples per image), ``recon``
(VAE SSIM/PSNR), ``d_acc`` (GAN discriminator accuracy on held-out real vs fake). Prints a
table and writes ``metrics.json`` and ``metrics.csv`` into the eval run directory.
"""

from __future__ import annotations

import csv
import difflib
import json
import logging
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from torchvision.utils import save_image

from genlab.errors import ConfigError, DataError
from genlab.metrics.feature_sets import (
    AUDIT_SPLITS,
    extract,
    generated_features,
    real_features,
    split_images,
)
from genlab.metrics.memorization import closest_pairs, memorization_report
from genlab.metrics.sampling import draw
from genlab.metrics.scores import SAMPLE_METRICS, score
from genlab.resume.checkpoint import load_model
from genlab.utils.atomic import atomic_path
from genlab.utils.extras import apply_extras
from genlab.utils.instantiate import instantiate_group
from genlab.utils.validation import check_accelerator

log = logging.getLogger(__name__)
# Needs the training images too: nearest-neighbour distances and the data-copying test.
AUDIT_METRICS = ("memorization",)
# Any other name is a model metric: the checkpoint's model says whether it computes it.


def model_metrics(model: pl.LightningModule | None) -> tuple[str, ...]:
    """The metrics ``model``'s test_step computes (its ``model_metrics``; none for files)."""
    return tuple(getattr(model, "model_metrics", ())) if model is not None else ()


def load_samples(path: str | Path) -> torch.Tensor:
    """A sample file (.npy/.pt; [N, C, H, W], [N, H, W, C] or [N, H, W]; float in [0, 1] or
    uint8) as float ``[N, C, H, W]`` in [0, 1]."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"samples={path} does not exist (write one with sample.py out=FILE.npy).")
    if path.suffix == ".npy":
        x = torch.from_numpy(np.load(path))
    elif path.suffix == ".pt":
        x = torch.load(path, map_location="cpu", weights_only=True)
    else:
        raise ConfigError(f"samples={path}: use a .npy or .pt file of images.")
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() == 4 and x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
        x = x.permute(0, 3, 1, 2)  # NHWC -> NCHW
    if x.dim() != 4 or x.shape[1] not in (1, 3) or len(x) < 2:
        raise DataError(
            f"samples={path} has shape {tuple(x.shape)}: expected at least 2 images as "
            "[N, C, H, W], [N, H, W, C] or [N, H, W] with C = 1 or 3."
        )
    if x.dtype == torch.uint8:
        return x.float() / 255
    x = x.float()
    if x.min() < -1e-3 or x.max() > 1 + 1e-3:
        raise DataError(
            f"samples={path} holds values in [{x.min():.3g}, {x.max():.3g}]: scale float images "
            "to [0, 1] (a tanh generator's [-1, 1] output: (x + 1) / 2), or save uint8."
        )
    return x.clamp(0, 1)


def _data_config(cfg: DictConfig, train_cfg: DictConfig | None, shape: dict) -> DictConfig:
    if cfg.get("data"):  # data=... : this set, at the resolution/channels being scored
        data_cfg = OmegaConf.merge(OmegaConf.to_container(cfg.data, resolve=True), shape)
    elif train_cfg is None:
        raise ConfigError(
            "samples=... needs data=<group> for the real images to compare with, e.g. data=mnist."
        )
    else:
        data_cfg = train_cfg.data
        if not Path(data_cfg.get("data_dir", ".")).exists():  # checkpoint from another machine
            data_cfg.data_dir = cfg.paths.data_dir
    return data_cfg


def audit_memorization(
    cfg: DictConfig,
    datamodule,
    extractor,
    samples: torch.Tensor,
    heldout: tuple[torch.Tensor, torch.Tensor],
    fake: tuple[torch.Tensor, torch.Tensor],
    device: torch.device,
    info: dict,
) -> dict[str, float]:
    """Nearest training images of the samples vs of the held-out test images (features and
    pixels), the data-copying test, and ``memorization_pairs.png`` (top row: the samples
    closest to a training image; bottom row: those training images)."""
    start = time.perf_counter()
    train = real_features(
        datamodule, "train", extractor, cfg.paths.cache_dir, device=device, allowed=AUDIT_SPLITS
    )
    train_pixels = split_images(datamodule, "train", allowed=AUDIT_SPLITS)
    heldout_pixels = split_images(datamodule, "test")
    results = memorization_report(
        train[0], fake[0], heldout[0], train_pixels, samples, heldout_pixels, seed=cfg.seed
    )
    generated, nearest_train = closest_pairs(samples, train_pixels, pairs=16)
    sheet = Path(cfg.paths.output_dir) / "memorization_pairs.png"
    with atomic_path(sheet) as tmp:
        save_image(torch.cat([generated, nearest_train]), tmp, nrow=len(generated), padding=2)
    info.update(memorization_sheet=str(sheet), memorization_train_images=len(train_pixels),
                memorization_seconds=round(time.perf_counter() - start, 2))  # fmt: skip
    ct = results["memorization/copying_ct"]
    log.info(
        "memorization: C_T=%.2f (p=%.3g; < -3 means copying), %.1f%% of samples closer to a "
        "training image than 95%% of held-out images are; closest pairs: %s",
        ct, results["memorization/copying_p"],
        100 * results["memorization/features_closer_than_heldout"], sheet,
    )  # fmt: skip
    return results


def _check_spelling(names: list[str]) -> None:
    """A name one letter off a sample metric is a typo, not a model metric (checked before
    anything is loaded)."""
    known = (*SAMPLE_METRICS, *AUDIT_METRICS, "model")
    for name in names:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
        if name not in known and close:
            raise ConfigError(
                f"metrics={names}: {name!r} is not a metric; did you mean {close[0]!r}? Sample "
                f"metrics: {', '.join(SAMPLE_METRICS)}; model metrics: those the checkpoint's "
                "model declares (metrics=[model] for all of them)."
            )


def _check_metrics(names: list[str], model: pl.LightningModule | None, path: str) -> None:
    """Sample and audit metrics work for every model; a model metric must be one the model
    declares. Inapplicable model metrics are skipped when others run; asked for alone, e.g.
    ``metrics=[nll]`` on a GAN, they are an error."""
    offered = model_metrics(model)
    known = (*SAMPLE_METRICS, *AUDIT_METRICS)
    if model is None:
        unknown = [m for m in names if m not in known]
        if unknown and len(unknown) == len(names):
            raise ConfigError(
                f"metrics={names}: {unknown} need a checkpoint (ckpt_path=...), not a sample "
                f"file; sample metrics are {list(known)}."
            )
        return
    runnable = [m for m in names if m in known or m in offered]
    if not runnable:
        raise ConfigError(
            f"metrics={names} cannot be computed for {path}, a {type(model).__name__} checkpoint:"
            f" it computes {list(offered) or 'no model metrics'}. Ask for those, or for sample "
            f"metrics ({', '.join(SAMPLE_METRICS)}), which work for every model."
        )


def run(cfg: DictConfig) -> dict[str, float]:
    metrics = cfg.metrics
    if isinstance(metrics, str):  # metrics=fid: one name, not its letters
        metrics = [metrics]
    names = list(metrics)
    _check_spelling(names)
    apply_extras(cfg)
    check_accelerator(cfg.trainer)
    model = train_cfg = samples = None
    if cfg.get("samples"):
        samples = load_samples(cfg.samples)
        shape = {"image_size": samples.shape[-1], "channels": samples.shape[1]}
        source = {"samples": str(cfg.samples)}
    elif cfg.get("ckpt_path"):
        model, train_cfg = load_model(cfg.ckpt_path)
        shape = {k: train_cfg.data[k] for k in ("image_size", "channels")}
        source = {"ckpt_path": str(cfg.ckpt_path)}
    else:
        raise ConfigError("give ckpt_path=<checkpoint> or samples=<file.npy> to evaluate.")
    if "model" in names:  # every metric the model declares (none for a sample file)
        at = names.index("model")
        names[at : at + 1] = [m for m in model_metrics(model) if m not in names]
    _check_metrics(names, model, str(cfg.get("ckpt_path")))
    data_cfg = _data_config(cfg, train_cfg, shape)
    if "memorization" in names and "augment" in data_cfg:
        data_cfg.augment = False  # the audit compares with the training images themselves
    datamodule = instantiate_group(OmegaConf.create({"data": data_cfg}), "data")
    on_gpu = cfg.trainer.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    device = torch.device("cuda" if on_gpu else "cpu")
    results: dict[str, float] = {}
    info: dict = {**source, "requested": names}

    sample_metrics = [m for m in names if m in SAMPLE_METRICS]
    audit = "memorization" in names
    if audit and samples is None:  # the audit compares pixels too: keep the images
        samples = draw(model.to(device), cfg.num_samples, cfg.seed, cfg.batch_size)
    if sample_metrics or audit:
        extractor = instantiate(cfg.features)
        start = time.perf_counter()
        real = real_features(datamodule, "test", extractor, cfg.paths.cache_dir, device=device)
        real_seconds = time.perf_counter() - start
        if samples is not None:
            fake = extract(extractor, samples.split(cfg.batch_size), device)
        else:
            fake = generated_features(
                model.to(device), extractor, cfg.num_samples, cfg.seed, cfg.batch_size
            )
    if audit:
        results.update(
            audit_memorization(cfg, datamodule, extractor, samples, real, fake, device, info)
        )
    if sample_metrics:
        scores = score(real, fake, sample_metrics)
        seconds = time.perf_counter() - start
        results.update(
            {f"test/{k}": float(v) for k, v in scores.items() if not isinstance(v, list)}
        )
        info.update(
            features=extractor.identity, num_samples=len(fake[0]), num_real=len(real[0]),
            class_counts=scores.get("class_counts"), real_features_seconds=round(real_seconds, 2),
            sample_metrics_seconds=round(seconds, 2),
        )  # fmt: skip
        log.info(
            "%s on %d samples vs %d test images (%s features): %.1f s (real features %.1f s)",
            ",".join(sample_metrics), len(fake[0]), len(real[0]), extractor.identity, seconds,
            real_seconds,
        )  # fmt: skip
        if len(fake[0]) < 10000 and "fid" in sample_metrics:
            log.warning("FID on %d < 10000 samples is biased upwards: report 10k.", len(fake[0]))

    requested = [m for m in names if m not in (*SAMPLE_METRICS, *AUDIT_METRICS)]
    if model is None and requested:
        log.info("metrics %s need a checkpoint, not a sample file: skipped", requested)
    if model is not None and requested:
        applicable = [m for m in requested if m in model_metrics(model)]
        for m in sorted(set(requested) - set(applicable)):
            log.warning(
                "metric %s is not computed by %s (its model metrics: %s): skipped",
                m, type(model).__name__, list(model_metrics(model)),
            )  # fmt: skip
        if applicable:
            prepare_test = getattr(model, "prepare_test", None)  # GenerativeModel's hook
            if prepare_test is not None:
                prepare_test(applicable, nll_samples=cfg.nll_samples)
            if "nll" in applicable:
                info["nll_samples"] = cfg.nll_samples
            trainer: pl.Trainer = instantiate_group(cfg, "trainer", logger=False, callbacks=[])
            pl.seed_everything(cfg.seed, workers=True)
            start = time.perf_counter()
            (test_results,) = trainer.test(model, datamodule=datamodule, verbose=False)
            info["model_metrics_seconds"] = round(time.perf_counter() - start, 2)
            info["model_metrics_images"] = min(
                len(datamodule.test_set), trainer.num_test_batches[0] * datamodule.batch_size
            )
            results.update({k: float(v) for k, v in test_results.items()})

    _report(results, info, Path(cfg.paths.output_dir))
    return results


def _report(results: dict[str, float], info: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps({**info, "metrics": results}, indent=2))
    with open(out_dir / "metrics.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["metric", "value"])
        writer.writerows(sorted(results.items()))
    caption = (
        f"sample metrics: {info['num_samples']} samples vs {info['num_real']} test images, "
        f"{info['features']} features"
        if "num_samples" in info
        else None
    )
    table = Table(title="genlab eval", caption=caption)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in sorted(results.items()):
        table.add_row(name, f"{value:.4g}")
    Console().print(table)
    log.info("wrote %s and metrics.csv", out_dir / "metrics.json")

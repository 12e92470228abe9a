"""``genlab.evaluate.run``: score a checkpoint, or any file of samples, with trusted metrics.

    python eval.py ckpt_path=outputs/train/runs/<time>/checkpoints/best.ckpt
    python eval.py ckpt_path=... metrics=[fid,kid,is,pr,coverage,nll] num_samples=10000
    python eval.py samples=other_project_samples.npy data=mnist
    python eval.py ckpt_path=... metrics=[fid,cond_acc,intra_fid,class_pr]   # conditional model

Sample metrics (``fid kid is pr coverage``) compare ``num_samples`` seeded samples (or the file's)
with the *test* split through ``features`` (mnist_classifier by default; inception for numbers
comparable with papers); the real features are cached (with the images' labels). A conditional
model draws those samples' classes uniformly. Its class-conditional metrics (``cond_acc
intra_fid class_pr``, metrics/conditional.py) are computed on ``num_samples // num_classes``
seeded samples of every class, asked for by label; other models and sample files refuse them.
Model metrics run ``trainer.test``; each model declares the ones its ``test_step`` computes
(``model_metrics``, docs/models.md): ``nll`` (VAE importance-weighted bound with
``nll_samples`` samples per image), ``recon`` (VAE SSIM/PSNR), ``d_acc`` (GAN discriminator
accuracy on held-out real vs fake). Prints a table and writes ``metrics.json`` and
``metrics.csv`` into the eval run directory.
"""

from __future__ import annotations

import csv
import difflib
import json
import logging
import pickle
import time
import warnings
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from torchvision.utils import save_image

from genlab.callbacks.framework.speed import SpeedOptions
from genlab.checkpoints.load import load_model
from genlab.config.arguments import Arg, check_args
from genlab.config.extras import print_config_if_asked, silence_warnings_if_asked
from genlab.config.instantiate import instantiate_group
from genlab.config.rules import COUNT, SEED, FilePath, Names, OrNone
from genlab.config.validation import check_accelerator, check_own_config, check_types
from genlab.errors import ConfigError, DataError
from genlab.metrics.conditional import (
    MIN_PER_CLASS,
    balanced_labels,
    check_classifier,
    check_conditional,
    conditional_score,
    too_few_per_class,
)
from genlab.metrics.feature_sets import (
    AUDIT_SPLITS,
    extract,
    labelled_real_features,
    real_features,
    split_images,
)
from genlab.metrics.memorization import MIN_SAMPLES as AUDIT_MIN_SAMPLES
from genlab.metrics.memorization import closest_pairs, memorization_report
from genlab.metrics.names import CONDITIONAL_METRICS
from genlab.metrics.sampling import draw, finite_samples, iter_samples, num_classes
from genlab.metrics.scores import SAMPLE_METRICS, require_finite, score, too_few
from genlab.resume.run_dir import check_cache_dir
from genlab.resume.slurm import silence_srun_hint
from genlab.utils.atomic import atomic_path

log = logging.getLogger(__name__)
# Needs the training images too: nearest-neighbour distances and the data-copying test.
AUDIT_METRICS = ("memorization",)
# CONDITIONAL_METRICS (cond_acc, intra_fid, class_pr): samples of requested classes, for
# conditional models only.
# Any other name is a model metric: the checkpoint's model says whether it computes it.

# eval.py's own arguments (conf/eval.yaml), checked before anything is loaded; the groups
# (trainer, features, data) are checked against their constructors' type hints.
ARGS = {
    "ckpt_path": Arg("the checkpoint to evaluate", OrNone(FilePath()), "outputs/.../last.ckpt"),
    "samples": Arg("a .npy/.pt file of images scored instead", OrNone(FilePath()), "samples.npy"),
    "metrics": Arg("the metrics to compute", Names(), "[fid,kid,pr]"),
    # The per-metric minimum (FID 2, IS 10, ...) is checked once the metrics are known.
    "num_samples": Arg("the samples drawn from the checkpoint", COUNT, "10000"),
    "batch_size": Arg("the images per forward pass", COUNT, "500"),
    "nll_samples": Arg("the importance samples per test image of nll", COUNT, "1000"),
    "seed": Arg("the seed of the samples and of the model metrics", SEED, "42"),
}


def model_metrics(model: pl.LightningModule | None) -> tuple[str, ...]:
    """The metrics ``model``'s test_step computes (its ``model_metrics``; none for files)."""
    return tuple(getattr(model, "model_metrics", ())) if model is not None else ()


def load_samples(path: str | Path) -> torch.Tensor:
    """A sample file (.npy/.pt; [N, C, H, W], [N, H, W, C] or [N, H, W]; float in [0, 1],
    uint8 or bool) as float ``[N, C, H, W]`` in [0, 1].

    Everything about the file is checked here, before any statistic: it reads (no pickled
    objects), holds one numeric tensor of images, and its values are finite and in range."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"samples={path} is a folder: pass a .npy or .pt file of images.")
    if not path.is_file():
        raise DataError(f"samples={path} does not exist (write one with sample.py out=FILE.npy).")
    if path.stat().st_size == 0:
        raise DataError(f"samples={path} is empty (0 bytes): write the samples again.")
    if path.suffix == ".npy":
        x = _read_npy(path)
    elif path.suffix == ".pt":
        x = _read_pt(path)
    else:
        raise ConfigError(f"samples={path}: use a .npy or .pt file of images.")
    x = _images(x, path)
    if x.dtype == torch.uint8:
        return x.float() / 255
    if x.dtype == torch.bool:  # binarised images: False black, True white
        return x.float()
    x = x.float()
    bad = ~torch.isfinite(x.flatten(1)).all(dim=1)
    if bool(bad.any()):  # before min/max, which NaN would pass, and any linear algebra
        raise DataError(
            f"samples={path} holds NaN/Inf in {int(bad.sum())} of {len(x)} images (first: "
            f"{int(bad.nonzero()[0])}): the generator diverged or the file is corrupt; drop "
            "those images (keep np.isfinite(x).reshape(len(x), -1).all(1)) or sample again."
        )
    low, high = float(x.min()), float(x.max())
    if low < -1e-3 or high > 1 + 1e-3:
        if low >= 0 and high <= 255:
            hint = "these look like 0-255 pixels: x / 255"
        elif low >= -1 - 1e-3 and high <= 1 + 1e-3:
            hint = "a tanh generator's [-1, 1] output: (x + 1) / 2"
        else:
            hint = "e.g. (x - x.min()) / (x.max() - x.min())"
        raise DataError(
            f"samples={path} holds values in [{low:.3g}, {high:.3g}]: scale float images to "
            f"[0, 1] ({hint}), or save uint8."
        )
    return x.clamp(0, 1)


def check_sample_shape(
    samples: torch.Tensor, path: str | Path, features_cfg: DictConfig, data_cfg: DictConfig
) -> None:
    """Samples the data could not have given are refused before the data is loaded at their
    size (the real images are resized to the samples'): non-square images, as no data module
    gives them, and images below the extractor's ``min_image_size`` (read from its class)."""
    height, width = samples.shape[-2:]
    native = data_cfg.get("image_size", "its size")
    if height != width:
        raise DataError(
            f"samples={path} holds {height}x{width} images, but data sets give square ones: "
            f"save the samples as generated, at the data's size (data.image_size={native})."
        )
    extractor = get_class(features_cfg._target_)
    minimum = getattr(extractor, "min_image_size", 1)
    if height < minimum:
        raise DataError(
            f"samples={path} holds {height}x{width} images, below the {minimum}x{minimum} that "
            f"features={getattr(extractor, 'name', extractor.__name__)} scores (the real images "
            f"would be shrunk to {height}x{width} to match): save the samples at the data's "
            f"size (data.image_size={native})."
        )


_NPY_MAGIC = b"\x93NUMPY"
# NumPy dtype kinds that cannot be images, as the error names them.
_NOT_NUMBERS = {"c": "complex numbers", "U": "strings", "S": "bytes", "V": "records",
                "M": "dates", "m": "time spans", "O": "Python objects"}  # fmt: skip


def _read_npy(path: Path) -> torch.Tensor:
    try:
        with open(path, "rb") as f:
            magic = f.read(len(_NPY_MAGIC))
        if magic != _NPY_MAGIC:
            what = "a zip archive (np.savez?)" if magic.startswith(b"PK") else "not a .npy file"
            raise DataError(
                f"samples={path} is {what}, without a NumPy header: write one array with "
                "np.save(path, images)."
            )
        # A pickle in the file could run any code: images are plain numbers.
        array = np.load(path, allow_pickle=False)
    except ValueError as err:
        first = str(err).splitlines()[0]
        if "allow_pickle" in first:  # an object array (e.g. a list of arrays of mixed sizes)
            raise DataError(
                f"samples={path} holds Python objects (dtype object), which are not loaded "
                "(unpickling can run code): save one numeric array, np.save(path, "
                "np.stack(images).astype(np.float32))."
            ) from err
        raise DataError(
            f"samples={path} cannot be read ({first}): it is truncated or corrupt; write it "
            "again with np.save."
        ) from err
    except (EOFError, OSError) as err:
        raise DataError(
            f"samples={path} cannot be read ({type(err).__name__}: {err}): check the file "
            "and its permissions, or write it again with np.save."
        ) from err
    kind = array.dtype.kind
    if kind not in "biuf":  # bool, int, uint, float: the rest cannot be images
        raise DataError(
            f"samples={path} holds {_NOT_NUMBERS.get(kind, 'no numbers')} (dtype "
            f"{array.dtype}), not images: save float32 in [0, 1] or uint8 in 0-255."
        )
    if not array.dtype.isnative:  # a file from a big-endian machine: torch reads native order
        array = array.astype(array.dtype.newbyteorder("="))
    return torch.from_numpy(array)


def _read_pt(path: Path) -> torch.Tensor:
    try:  # tensors and plain data only: a pickled object could run code
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # weights_only refused an object
        raise DataError(
            f"samples={path} holds Python objects other than tensors, which are not loaded "
            "(unpickling can run code): save the image tensor, torch.save(images, path)."
        ) from err
    except (RuntimeError, EOFError, KeyError, ValueError) as err:
        # What torch.load raises on a truncated zip or a file torch did not write.
        first = (str(err).strip().splitlines() or [""])[0].split(". ")[0]
        raise DataError(
            f"samples={path} cannot be read ({type(err).__name__}: {first}): it is truncated, "
            "corrupt or not a PyTorch file; write it with torch.save(images, path)."
        ) from err
    except OSError as err:
        raise DataError(
            f"samples={path} cannot be read ({type(err).__name__}: {err}): check the file "
            "and its permissions."
        ) from err
    if not isinstance(obj, torch.Tensor):
        keys = f" with keys {list(obj)[:5]}" if isinstance(obj, dict) else ""
        raise DataError(
            f"samples={path} holds a {type(obj).__name__}{keys}, not a tensor: save the image "
            "tensor itself, torch.save(images, path)."
        )
    if obj.is_complex():
        raise DataError(
            f"samples={path} holds complex numbers ({obj.dtype}), not images: save float32 in "
            "[0, 1] or uint8 in 0-255."
        )
    return obj


def _images(x: torch.Tensor, path: Path) -> torch.Tensor:
    """``x`` as [N, C, H, W] with C = 1 or 3, of a dtype that maps to [0, 1] unambiguously."""
    if not (x.is_floating_point() or x.dtype in (torch.uint8, torch.bool)):
        raise DataError(  # 0/1 or 0-255? int64 does not say: the file must
            f"samples={path} holds {x.dtype} values: save uint8 for 0-255 images "
            "(x.astype(np.uint8)) or float32 in [0, 1]."
        )
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() == 4 and x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
        x = x.permute(0, 3, 1, 2)  # NHWC -> NCHW
    if x.dim() != 4 or x.shape[1] not in (1, 3) or 0 in x.shape:
        raise DataError(
            f"samples={path} has shape {tuple(x.shape)}: expected images as [N, C, H, W], "
            "[N, H, W, C] or [N, H, W] with C = 1 or 3 and N, H, W > 0."
        )
    return x


def _data_config(cfg: DictConfig, train_cfg: DictConfig | None, shape: dict) -> DictConfig:
    if cfg.get("data"):  # data=... : this set, at the resolution/channels being scored
        data_cfg = OmegaConf.merge(OmegaConf.to_container(cfg.data, resolve=True), shape)
    else:  # a checkpoint's own data (check_arguments asks samples=... for data=...)
        data_cfg = train_cfg.data
        if "data_dir" in data_cfg:  # this machine's data folder: stored paths are not followed
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


def score_conditional(
    cfg: DictConfig,
    model: pl.LightningModule,
    metrics: list[str],
    extractor,
    real: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    datamodule,
    device: torch.device,
    info: dict,
) -> dict[str, float]:
    """The class-conditional metrics (``test/cond_acc``, ``test/intra_fid``,
    ``test/intra_fid/<c>``, ...) on ``num_samples // num_classes`` seeded samples of every
    class, asked for by label, against the test images of each class."""
    start = time.perf_counter()
    classes = num_classes(model)
    labels = balanced_labels(classes, cfg.num_samples)
    where = f"ckpt_path={cfg.ckpt_path}"
    batches = iter_samples(model.to(device), len(labels), cfg.seed, cfg.batch_size, labels)
    fake = extract(extractor, finite_samples(batches, where), device)
    data = getattr(datamodule, "dataset", None) or type(datamodule).__name__
    classes_of = getattr(extractor, "classes_of", None)
    if "cond_acc" in metrics and classes_of != data:
        log.warning(
            "cond_acc reads features=%s's classes (those of %s) as the model's: on data %s it "
            "is only meaningful if that classifier was trained on %s's classes.",
            extractor.name, classes_of or "unknown data", data, data,
        )  # fmt: skip
    scores = conditional_score(
        real, (*fake, labels), metrics, classes,
        sources=(f"the {data} test images", f"{where}'s class-conditional samples"),
    )  # fmt: skip
    seconds = time.perf_counter() - start
    info.update(
        conditional_num_samples=len(labels), conditional_samples_per_class=len(labels) // classes,
        num_classes=classes, conditional_metrics_seconds=round(seconds, 2),
        real_per_class=torch.bincount(real[2][real[2] >= 0]).tolist(),
    )  # fmt: skip
    log.info(
        "%s on %d samples of each of %d classes vs the test images of each class: %.1f s",
        ",".join(metrics), len(labels) // classes, classes, seconds,
    )  # fmt: skip
    if cfg.num_samples % classes:
        log.info("num_samples=%d is not a multiple of %d classes: %d samples drawn",
                 cfg.num_samples, classes, len(labels))  # fmt: skip
    return {f"test/{k}": float(v) for k, v in scores.items()}


def _check_spelling(names: list[str]) -> None:
    """A name one letter off a sample metric is a typo, not a model metric (checked before
    anything is loaded)."""
    known = (*SAMPLE_METRICS, *AUDIT_METRICS, *CONDITIONAL_METRICS, "model")
    for name in names:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
        # The longer conditional names need a closer match: a model's own d_acc is not a
        # misspelt cond_acc (similarity 0.77), cond_ac or intra_fd are (0.93, 0.94).
        if close and close[0] in CONDITIONAL_METRICS:
            close = difflib.get_close_matches(name, CONDITIONAL_METRICS, n=1, cutoff=0.85)
        if name not in known and close:
            raise ConfigError(
                f"metrics={names}: {name!r} is not a metric; did you mean {close[0]!r}? Sample "
                f"metrics: {', '.join(SAMPLE_METRICS)}; conditional models' metrics: "
                f"{', '.join(CONDITIONAL_METRICS)}; model metrics: those the checkpoint's "
                "model declares (metrics=[model] for all of them)."
            )


def _check_metrics(names: list[str], model: pl.LightningModule | None, path: str) -> None:
    """Sample and audit metrics work for every model; a model metric must be one the model
    declares. Inapplicable model metrics are skipped when others run; asked for alone, e.g.
    ``metrics=[nll]`` on a GAN, they are an error. (Conditional metrics: ``check_conditional``.)"""
    offered = model_metrics(model)
    known = (*SAMPLE_METRICS, *AUDIT_METRICS, *CONDITIONAL_METRICS)
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


def _too_few(names: list[str], count: int) -> list[str]:
    """What ``count`` samples cannot give among the requested sample and audit metrics (and
    conditional ones, whatever the model's classes: ``count`` is at most one class's share)."""
    problems = too_few(names, count)
    if "memorization" in names and count < AUDIT_MIN_SAMPLES:
        problems.append(
            f"memorization needs >= {AUDIT_MIN_SAMPLES} (a data-copying cell's samples)"
        )
    return problems + too_few_per_class(names, count)


def _check_conditional_counts(names: list[str], model, num_samples: int) -> None:
    """``num_samples`` split evenly over the conditional model's classes must give each class
    enough samples for every requested conditional metric (checked once the model is known)."""
    conditional = [m for m in names if m in CONDITIONAL_METRICS]
    if not conditional:
        return
    classes = num_classes(model)
    problems = too_few_per_class(conditional, num_samples // classes)
    if problems:
        least = max(MIN_PER_CLASS[m][0] for m in conditional)
        raise ConfigError(
            f"num_samples={num_samples} gives {num_samples // classes} samples to each of the "
            f"model's {classes} classes, too few: {'; '.join(problems)}. Raise num_samples to "
            f">= {least * classes}, or leave those metrics out of metrics=[...]."
        )


def _check_classifier_before_loading(names: list[str], model, features_cfg: DictConfig) -> None:
    """cond_acc with a feature net of another class count: refused before any data is read,
    from the class's own ``num_classes`` (a net that does not declare it is checked later)."""
    if "cond_acc" in names and num_classes(model):
        extractor = get_class(features_cfg._target_)
        name = getattr(extractor, "name", extractor.__name__)
        check_classifier(getattr(extractor, "num_classes", None), num_classes(model),
                         f"features={name}")  # fmt: skip


def check_arguments(cfg: DictConfig) -> list[str]:
    """Every check on eval.py's arguments that needs no file, model or data: run first, so a
    mistake is the one line printed. Returns the requested metric names."""
    check_args(cfg, ARGS)
    metrics = cfg.metrics
    names = [metrics] if isinstance(metrics, str) else list(metrics)  # metrics=fid: one name
    _check_spelling(names)
    if not cfg.get("samples") and not cfg.get("ckpt_path"):
        raise ConfigError("give ckpt_path=<checkpoint> or samples=<file.npy> to evaluate.")
    if cfg.get("samples") and not cfg.get("data"):
        raise ConfigError(
            "samples=... needs data=<group> for the real images to compare with, e.g. data=mnist."
        )
    if cfg.get("samples"):  # a file has no classes: refused before it is read
        check_conditional(names, None, f"samples={cfg.samples}")
    check_accelerator(cfg.trainer)
    for group in ("trainer", "features", "data"):
        if cfg.get(group):
            check_types(cfg[group], group)
    if cfg.get("data"):  # the data's own cheap checks (an empty image folder), before any load
        check_own_config(cfg.data)
    if not cfg.get("samples") and cfg.get("ckpt_path"):  # a samples file is used whole
        problems = _too_few(names, cfg.num_samples)
        if problems:
            raise ConfigError(
                f"num_samples={cfg.num_samples} is too few: {'; '.join(problems)}. Raise "
                "num_samples, or leave those metrics out of metrics=[...]."
            )
    return names


def run(cfg: DictConfig) -> dict[str, float]:
    with warnings.catch_warnings():  # the extras' warning filters hold for this run only
        silence_srun_hint()
        return _evaluate(cfg)


def _evaluate(cfg: DictConfig) -> dict[str, float]:
    silence_warnings_if_asked(cfg)
    names = check_arguments(cfg)
    check_cache_dir((cfg.get("paths") or {}).get("cache_dir"))  # real features go there
    model = train_cfg = samples = None
    if cfg.get("samples"):
        samples = load_samples(cfg.samples)
        check_sample_shape(samples, cfg.samples, cfg.features, cfg.data)
        problems = _too_few(names, len(samples))
        if problems:
            raise DataError(
                f"samples={cfg.samples} holds {len(samples)} image(s), too few: "
                f"{'; '.join(problems)}. Save more samples, or leave those metrics out of "
                "metrics=[...]."
            )
        shape = {"image_size": samples.shape[-1], "channels": samples.shape[1]}
        source = {"samples": str(cfg.samples)}
    else:
        model, train_cfg = load_model(cfg.ckpt_path, trust=cfg.get("trust_checkpoint") is True)
        shape = {k: train_cfg.data[k] for k in ("image_size", "channels")}
        source = {"ckpt_path": str(cfg.ckpt_path)}
    if "model" in names:  # every metric the model declares (none for a sample file)
        at = names.index("model")
        names[at : at + 1] = [m for m in model_metrics(model) if m not in names]
    where = next(f"{k}={v}" for k, v in source.items())  # names the samples in errors
    # Conditional metrics on a model without classes (or a sample file): an error, whatever
    # else is asked for.
    conditional = check_conditional(names, model, where)
    _check_metrics(names, model, str(cfg.get("ckpt_path")))
    _check_conditional_counts(names, model, cfg.num_samples)
    _check_classifier_before_loading(names, model, cfg.features)
    print_config_if_asked(cfg)  # after the checks above: a mistake's line ends the output
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
        samples = draw(model.to(device), cfg.num_samples, cfg.seed, cfg.batch_size, where)
    if sample_metrics or audit or conditional:
        extractor = instantiate(cfg.features)
        if "cond_acc" in conditional:  # a feature net that did not declare its classes
            classifier = getattr(extractor, "num_classes", None)
            check_classifier(classifier, num_classes(model), f"features={extractor.name}")
        start = time.perf_counter()
        real_feats, real_logits, real_labels = labelled_real_features(
            datamodule, "test", extractor, cfg.paths.cache_dir, device=device
        )
        real = (real_feats, real_logits)
        real_seconds = time.perf_counter() - start
    if sample_metrics or audit:
        if samples is not None:
            fake = extract(extractor, samples.split(cfg.batch_size), device)
        else:  # streamed batch by batch; a diverged model's NaN images stop at the first batch
            batches = iter_samples(model.to(device), cfg.num_samples, cfg.seed, cfg.batch_size)
            fake = extract(extractor, finite_samples(batches, where), device)
        # Finite images can still give non-finite features (an extractor run in fp16).
        for x in fake:
            require_finite(x, f"the features of {where}")
    if audit:
        results.update(
            audit_memorization(cfg, datamodule, extractor, samples, real, fake, device, info)
        )
    if sample_metrics:
        dataset = getattr(datamodule, "dataset", None) or type(datamodule).__name__
        scores = score(real, fake, sample_metrics, sources=(f"the {dataset} test images", where))
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
    if conditional:
        results.update(
            score_conditional(
                cfg, model, conditional, extractor, (*real, real_labels), datamodule, device, info
            )
        )

    requested = [
        m for m in names if m not in (*SAMPLE_METRICS, *AUDIT_METRICS, *CONDITIONAL_METRICS)
    ]
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
            # The model's compile / channels_last, as in training.
            trainer: pl.Trainer = instantiate_group(
                cfg, "trainer", logger=False, callbacks=[SpeedOptions()]
            )
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
    captions = []
    if "num_samples" in info:
        captions.append(
            f"sample metrics: {info['num_samples']} samples vs {info['num_real']} test images, "
            f"{info['features']} features"
        )
    if "conditional_num_samples" in info:
        captions.append(
            f"conditional metrics: {info['conditional_samples_per_class']} samples of each of "
            f"{info['num_classes']} classes vs each class's test images"
        )
    table = Table(title="genlab eval", caption="; ".join(captions) or None)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in sorted(results.items()):
        table.add_row(name, f"{value:.4g}")
    Console().print(table)
    log.info("wrote %s and metrics.csv", out_dir / "metrics.json")

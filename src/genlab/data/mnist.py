"""MNIST, its look-alikes (Fashion-MNIST, KMNIST) and CIFAR-10 as a LightningDataModule.

    python train.py data=mnist data.batch_size=256 data.train_fraction=0.1
    python train.py data=cifar10          # 32x32x3, downloaded by torchvision on first use

torchvision reads the IDX files; the module then keeps the whole set as one float tensor in
[0, 1] (NCHW), which is far faster on CPU than decoding a PIL image per sample. The repo ships
MNIST's four ``.gz`` files under ``data/MNIST/raw/``: they are decompressed (and checked against
``data/MNIST/SHA256SUMS.raw``) on first use, so training works offline on a fresh clone.

The decompressed files are derived: each is checked once per process (IDX header against the
file size, then the SHA-256 when the sums file lists it), and one that fails is decompressed
again from its ``.gz``. The ``.gz`` files are only ever read; a damaged one is one error naming
it and the fix.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import shutil
import struct
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision import datasets

from genlab.config.rules import AT_LEAST_ONE
from genlab.data.splits import MIN_VAL_IMAGES, SplitDataModule, class_keys
from genlab.data.transforms import build_augmentation
from genlab.errors import ConfigError, DataError
from genlab.utils.atomic import atomic_path
from genlab.utils.hashing import file_sha256

log = logging.getLogger(__name__)
# config name -> torchvision class (its name is also the folder under data_dir)
DATASETS: dict[str, type[datasets.MNIST]] = {
    "mnist": datasets.MNIST,
    "fashion_mnist": datasets.FashionMNIST,
    "kmnist": datasets.KMNIST,
}
# Other torchvision sets that keep uint8 HWC arrays in ``.data`` (no IDX files to prepare).
ARRAY_DATASETS = {"cifar10": datasets.CIFAR10}
# The published class names of each set, label i named by entry i (torchvision's ``classes``;
# MNIST's as bare digits). ``${dataset_classes:${data.dataset}}`` gives data.class_names.
# fmt: off
DATASET_CLASSES: dict[str, tuple[str, ...]] = {
    "mnist": ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9"),
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"),
    "kmnist": ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                "truck"),
}
# fmt: on
# Images in each set's training file: data.val_size is checked against them at start-up.
TRAIN_SET_SIZES = {"mnist": 60000, "fashion_mnist": 60000, "kmnist": 60000, "cifar10": 50000}
SUMS_FILE = "SHA256SUMS.raw"  # beside raw/: SHA-256 of the decompressed files
# IDX element type code -> bytes per element (http://yann.lecun.com/exdb/mnist/, "IDX format").
IDX_ITEM_BYTES = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}
# What reading a damaged gzip raises: bad header or CRC, a cut-off stream, bad deflate data.
GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)
# Decompressed files found sound in this process, as (path, size, mtime_ns, expected SHA-256):
# prepare_data and every setup call ensure_raw_files, and hashing 55 MB each time is waste.
_verified: set[tuple[str, int, int, str | None]] = set()


def load_array_dataset(
    name: str, data_dir: str | Path, train: bool, download: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images ``[N, C, H, W]`` and labels of a torchvision set such as CIFAR-10."""
    try:
        raw = ARRAY_DATASETS[name](str(data_dir), train=train, download=download)
    except (RuntimeError, OSError) as e:  # missing/corrupt files, or the download failed
        reason = (
            f"could not be downloaded ({str(e).splitlines()[0]})"
            if download
            else "download is disabled (data.download=false)"
        )
        raise DataError(
            f"{name} is not in {Path(data_dir).resolve()} and {reason}. Download it on a machine "
            f"with internet (torchvision.datasets.CIFAR10(root, download=True)) and copy the "
            f"folder it makes into data.data_dir."
        ) from e
    return torch.from_numpy(raw.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(raw.targets)


def check_dataset(dataset: str) -> None:
    if dataset not in DATASET_CLASSES:
        raise ConfigError(
            f"data.dataset={dataset!r} is unknown: choose one of {sorted(DATASET_CLASSES)}."
        )


def check_class_count(dataset: str, num_classes: int) -> None:
    """``data.num_classes`` must be the set's own count: a model conditioned on more classes
    than the data has learns nothing for them; on fewer, labels fall outside its range."""
    known = len(DATASET_CLASSES[dataset])
    if num_classes != known:
        raise ConfigError(
            f"data.num_classes={num_classes} but {dataset} has {known} classes: drop the "
            "data.num_classes and data.class_names overrides (both follow data.dataset); to "
            f"rename the classes, give {known} names in data.class_names."
        )


def val_size_error(dataset: str, val_size: int, size: int) -> ConfigError:
    """``data.val_size`` that leaves no training image: the key, the set's size, the range."""
    return ConfigError(
        f"data.val_size={val_size} leaves no training images: the {dataset} training set holds "
        f"{size}, split into validation (data.val_size) and training. Use {MIN_VAL_IMAGES} to "
        f"{size - 1} (default 5000), leaving at least data.batch_size images for training."
    )


def raw_file_names(dataset_cls: type[datasets.MNIST]) -> list[str]:
    """The decompressed IDX file names torchvision expects in ``<data_dir>/<Class>/raw/``."""
    return [os.path.splitext(os.path.basename(url))[0] for url, _ in dataset_cls.resources]


def _read_checksums(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    sums = {}
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or len(fields[0]) != 64:
            raise DataError(
                f"{path} line {number} is not '<sha256>  <file name>'. Restore the file from the "
                f"genlab repository (data/MNIST/{SUMS_FILE}), or delete it to skip the check."
            )
        sums[fields[1]] = fields[0].lower()
    return sums


def _idx_problem(path: Path) -> str | None:
    """What is wrong with an IDX file's layout (the header's shape against the file size)."""
    with open(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in IDX_ITEM_BYTES:
            return "not an IDX file"
        packed_dims = f.read(4 * head[3])
    if len(packed_dims) < 4 * head[3]:
        return "truncated header"
    dims = struct.unpack(f">{head[3]}I", packed_dims)
    expected = 4 + len(packed_dims) + math.prod(dims) * IDX_ITEM_BYTES[head[2]]
    size = path.stat().st_size
    return None if size == expected else f"{size} bytes, its header says {expected}"


def _stamp(path: Path, digest: str | None) -> tuple[str, int, int, str | None]:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns, digest


def _raw_problem(path: Path, digest: str | None) -> str | None:
    """What is wrong with a decompressed file (``None``: sound). The SHA-256 decides when the
    sums file lists it; else the IDX layout, which catches truncation."""
    if digest is not None:
        return None if file_sha256(path) == digest else f"SHA-256 mismatch with {SUMS_FILE}"
    return _idx_problem(path)


def _source(dataset_cls: type[datasets.MNIST], name: str) -> str:
    """Where a fresh copy of ``<name>.gz`` comes from, for error messages."""
    if dataset_cls is datasets.MNIST:
        return f"the genlab repository (data/MNIST/raw/{name}.gz)"
    return f"{dataset_cls.mirrors[0]}{name}.gz"


def _decompress(packed: Path, target: Path, digest: str | None, source: str) -> None:
    """``packed`` -> ``target``, checked before it is renamed into place."""
    fix = f"Re-copy it from {source}, or delete it so that it is downloaded again."
    # A private temporary file, renamed into place only once checked: never a half-written or
    # wrong target, and two runs starting together (multirun) cannot trip over each other.
    with atomic_path(target) as tmp:
        try:
            with gzip.open(packed, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
        except GZIP_ERRORS as e:
            raise DataError(f"{packed} is damaged ({type(e).__name__}: {e}). {fix}") from None
        problem = _raw_problem(tmp, digest)
        if problem is not None:
            raise DataError(
                f"{packed} does not decompress to the expected file ({problem}): the copy is "
                f"corrupt. {fix}"
            )
    _verified.add(_stamp(target, digest))


def ensure_raw_files(data_dir: str | Path, dataset: str = "mnist", download: bool = True) -> Path:
    """Make sure the IDX files of ``dataset`` are in ``<data_dir>/<Class>/raw/``.

    Order: files already there (checked once per process; a damaged one is decompressed again
    from its ``.gz``) -> decompress shipped ``.gz`` (verified against ``SHA256SUMS.raw`` when
    present) -> torchvision download -> one clear ``DataError``. Returns the raw folder.
    """
    dataset_cls = DATASETS[dataset]
    root = Path(data_dir) / dataset_cls.__name__
    raw = root / "raw"
    checksums = _read_checksums(root / SUMS_FILE)
    for name in raw_file_names(dataset_cls):
        target, packed = raw / name, raw / f"{name}.gz"
        if target.exists():
            stamp = _stamp(target, checksums.get(name))
            if stamp in _verified:
                continue
            problem = _raw_problem(target, checksums.get(name))
            if problem is None:
                _verified.add(stamp)
                continue
            if not packed.exists():
                raise DataError(
                    f"{target} is damaged ({problem}). Delete it so that it is downloaded "
                    f"again, or put a fresh {name}.gz beside it (from {_source(dataset_cls, name)})."
                )
            # Derived from the .gz beside it, so it may be replaced (the .gz is only read).
            log.warning(
                "%s is damaged (%s): decompressing it again from %s", target, problem, packed.name
            )
        elif not packed.exists():
            continue
        _decompress(packed, target, checksums.get(name), _source(dataset_cls, name))

    missing = [n for n in raw_file_names(dataset_cls) if not (raw / n).exists()]
    if missing and download:
        try:
            dataset_cls(str(data_dir), train=True, download=True)
            dataset_cls(str(data_dir), train=False, download=True)
        except Exception as err:  # no network, mirror down, ...: reported below
            reason = f"download failed ({type(err).__name__}: {err})"
        else:
            return raw
    elif missing:
        reason = "download is disabled (data.download=false)"
    else:
        return raw
    raise DataError(
        f"{dataset} is missing and {reason}. Put these files (or their .gz versions) in "
        f"{raw.resolve()}/: {', '.join(missing)}. Or point data.data_dir at a folder that "
        f"holds {dataset_cls.__name__}/raw/."
    )


class ImageTensorDataset(Dataset):
    """(image, label) pairs from an in-memory uint8 tensor ``[N, 1 or C, H, W]``.

    Items are float32 in [0, 1] with ``channels`` channels (grey is repeated on the fly, so a
    3-channel view costs no memory), optionally shifted by up to ``shift`` pixels and
    ``binarize``d (each pixel 1 with probability its intensity, redrawn on every access).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        channels: int = 1,
        shift: int = 0,
        binarize: bool = False,
        transform=None,
    ) -> None:
        self.images, self.labels, self.channels, self.shift = images, labels, channels, shift
        self.binarize, self.transform = binarize, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[i].float().div_(255.0)
        if self.binarize:
            image = torch.bernoulli(image)
        image = image.expand(self.channels, -1, -1)
        if self.shift:
            # Translate by up to `shift` px (zero fill): digits stay digits, unlike flips.
            s = self.shift
            dx, dy = torch.randint(-s, s + 1, (2,)).tolist()
            image = F.pad(image, (s, s, s, s))[
                :, s + dy : s + dy + image.shape[1], s + dx : s + dx + image.shape[2]
            ]
        if self.transform is not None:
            image = self.transform(image).clamp_(0, 1)
        return image, self.labels[i]


class MNISTDataModule(SplitDataModule):
    """MNIST-format datasets: seeded train/val split of the 60k training set, 10k test set.

    Batches are ``(images, labels)`` with images float32 ``[B, channels, image_size,
    image_size]`` in [0, 1]. ``train_fraction`` keeps a seeded subset of the training split
    (data-scaling experiments); validation and test sets never shrink. ``samples_per_epoch``
    fixes the epoch length (reshuffled passes over a small subset), so every fraction gets the
    same training budget. ``on_device`` keeps the uint8 set on the training device and draws
    batches there (``genlab.data.device_batches``): no DataLoader, no host-to-device copies.

    ``binarize=true`` gives *dynamically binarized* MNIST, the benchmark of VAE likelihoods
    (Burda et al., 2016): training pixels are redrawn as Bernoulli(intensity) every time they
    are read; validation and test images are binarized once with a fixed seed, so every model
    and every run is scored on the same binary test set.
    """

    def __init__(
        self,
        data_dir: str = "data",
        dataset: str = "mnist",
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool | str = "auto",
        persistent_workers: bool = False,
        train_fraction: float = 1.0,
        val_size: Annotated[int, AT_LEAST_ONE] = 5000,  # validation feeds the monitor
        image_size: int = 28,
        channels: int = 1,
        augment: bool | Sequence[str | dict] = False,
        split_seed: int = 42,
        download: bool = True,
        binarize: bool = False,
        samples_per_epoch: int | None = None,
        on_device: bool = False,
        poisson_sampling: bool = False,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        check_dataset(dataset)
        if class_names is None:  # built in Python (or an old config): the set's own names
            class_names = DATASET_CLASSES[dataset]
        super().__init__(
            batch_size,
            num_workers,
            pin_memory,
            persistent_workers,
            samples_per_epoch,
            on_device,
            poisson_sampling,
            train_fraction=train_fraction,
            num_classes=num_classes,
            class_names=class_names,
        )
        check_class_count(dataset, self.num_classes)
        if channels not in (1, 3):
            raise ConfigError(f"data.channels={channels} must be 1 or 3 (grey is repeated).")
        self.data_dir, self.dataset = data_dir, dataset
        self.val_size, self.split_seed = val_size, split_seed
        self.image_size, self.channels = image_size, channels
        self.download, self.binarize = download, binarize
        # true: the classic +-2 px shifts (fast path); a list: genlab.data.transforms names.
        self.shift = 2 if augment is True else 0
        self.transform = (
            None if isinstance(augment, bool) else build_augmentation(augment, image_size)
        )

    @staticmethod
    def check_config(cfg: Mapping) -> None:
        """Start-up check (``genlab.config.validation.validate``, before the config is printed):
        reads no file, so a missing data_dir is still reported by ``prepare_data``."""
        dataset, val_size = cfg.get("dataset", "mnist"), cfg.get("val_size")
        size = TRAIN_SET_SIZES.get(dataset)
        if size and isinstance(val_size, int) and val_size >= size:
            raise val_size_error(dataset, val_size, size)
        check_dataset(dataset)
        names = cfg.get("class_names")
        names = DATASET_CLASSES[dataset] if names is None else list(names)
        check_class_count(dataset, class_keys(cfg.get("num_classes"), names)[0])

    def prepare_data(self) -> None:
        if self.dataset in ARRAY_DATASETS:
            load_array_dataset(self.dataset, self.data_dir, True, self.download)
        else:
            ensure_raw_files(self.data_dir, self.dataset, self.download)

    def _load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images ``[N, C, image_size, image_size]`` and labels: a quarter of float32's
        memory, converted per item."""
        if self.dataset in ARRAY_DATASETS:
            images, labels = load_array_dataset(self.dataset, self.data_dir, train, self.download)
        else:
            ensure_raw_files(self.data_dir, self.dataset, self.download)  # no-op once prepared
            raw = DATASETS[self.dataset](str(self.data_dir), train=train, download=False)
            images, labels = raw.data.unsqueeze(1), raw.targets
        if images.shape[1] == 3 and self.channels == 1:  # colour set asked for in grey
            images = images.float().mul(torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1))
            images = images.sum(1, keepdim=True).round_().to(torch.uint8)
        if self.image_size != images.shape[-1]:
            resized = F.interpolate(
                images.float(), size=self.image_size, mode="bilinear", antialias=True
            )
            images = resized.round_().clamp_(0, 255).to(torch.uint8)
        return images, labels

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate") and self.train_set is None:
            images, labels = self._load(train=True)
            if self.val_size >= len(images):
                raise val_size_error(self.dataset, self.val_size, len(images))
            order = torch.randperm(
                len(images), generator=torch.Generator().manual_seed(self.split_seed)
            )
            val_idx, train_idx = order[: self.val_size], order[self.val_size :]
            train_idx = train_idx[: max(1, round(self.train_fraction * len(train_idx)))]
            self.check_labels(labels, f"data.dataset={self.dataset}'s training split")
            self.train_set = ImageTensorDataset(
                images[train_idx],
                labels[train_idx],
                self.channels,
                self.shift,
                self.binarize,
                self.transform,
            )
            self.val_set = ImageTensorDataset(
                self._fixed_binary(images[val_idx], 1), labels[val_idx], self.channels
            )
            self.check_validation_split(
                f"data.val_size={self.val_size}",
                f"Set data.val_size to {MIN_VAL_IMAGES} or more (default 5000).",
            )
        if stage in (None, "test", "predict") and self.test_set is None:
            images, labels = self._load(train=False)
            self.check_labels(labels, f"data.dataset={self.dataset}'s test split")
            self.test_set = ImageTensorDataset(self._fixed_binary(images, 2), labels, self.channels)

    def _fixed_binary(self, images: torch.Tensor, seed: int) -> torch.Tensor:
        """Evaluation images binarized once with a fixed seed (if ``binarize``), as uint8."""
        if not self.binarize:
            return images
        draw = torch.bernoulli(images.float() / 255, generator=torch.Generator().manual_seed(seed))
        return draw.to(torch.uint8) * 255

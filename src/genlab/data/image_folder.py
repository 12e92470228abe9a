"""Any folder of images as a LightningDataModule.

    python train.py data=image_folder data.path=/data/cats data.image_size=64
    python train.py data=image_folder data.path=/data/faces data.cache=true data.augment=[hflip]

Scans ``path`` recursively for png, jpg/jpeg, webp, bmp and gif (first frame). Classes follow
torchvision's ImageFolder: one subfolder per class, label i for the i-th name in sorted order;
a flat folder (any image directly in it) is one class, label 0, named after the folder. A
``train/`` + ``val/`` layout is used as the split, its classes those of ``train/`` (a class
folder of ``val/`` that ``train/`` lacks is an error); otherwise a seeded ``val_fraction`` is
held out. ``folder_classes`` finds the classes without reading an image: the config's
``data.class_names`` (``data.num_classes`` is its length), checked against the files in
``setup``. Images are resized (shorter side) and centre-cropped to ``image_size``, converted to
grey or RGB (``channels``; CMYK, palette and alpha images are converted, alpha composited on
white) and returned as float ``[C, H, W]`` in [0, 1], the same contract as MNIST, so every
model runs unchanged.

Unreadable, empty, truncated, non-image, too-small and too-large (decompression-bomb) files are
skipped, never fatal: they are counted, logged and listed in ``<report_dir>/data_report.json``.
``cache=true`` decodes every image once into a memory-mapped uint8 array under ``cache_dir``
(re-used while the file list, sizes, modification times and ``image_size``/``channels`` are
unchanged). A cache that is truncated or whose metadata is broken is moved aside
(``<name>.corrupt-<n>``, never deleted) with one warning and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset

from genlab.data.splits import MIN_VAL_IMAGES, SplitDataModule, class_keys, listed_names
from genlab.data.transforms import build_augmentation
from genlab.errors import ConfigError, DataError
from genlab.utils.atomic import atomic_path, move_aside

log = logging.getLogger(__name__)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
SPLIT_DIRS = ("train", "val")
NET_SIZES = (28, 32, 64, 128, 256)  # sizes genlab.nets.conv builds
NO_CLASS = "(no class folder)"  # what file_classes calls a file outside the class folders


class BadImage(Exception):
    """A file that cannot be used as an image; the message is the reason."""


def _not_a_folder(root: Path) -> DataError:
    return DataError(
        f"data.path={str(root)!r} is not a folder. Point data.path at a folder of images "
        f"({', '.join(IMAGE_EXTENSIONS)}), searched recursively."
    )


def _no_images(root: Path, file_list: str | Path | None) -> DataError:
    listed = f" listed in {file_list}" if file_list else ""
    return DataError(
        f"no images in {str(root)!r}{listed}: searched recursively for "
        f"{', '.join(IMAGE_EXTENSIONS)} (any case). Point data.path at a folder of images."
    )


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def require_images(root: str | Path, file_list: str | Path | None = None) -> None:
    """The cheap start-up part of ``scan_folder``'s checks: ``root`` is a folder, holds an
    image file (the walk stops at the first) and ``file_list`` exists. Reads no image."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise _not_a_folder(root)
    if file_list is not None and not Path(file_list).is_file():
        raise DataError(f"data.file_list={str(file_list)!r} does not exist.")
    if not any(_is_image(p) for p in root.rglob("*")):
        raise _no_images(root, None)


def scan_folder(root: str | Path, file_list: str | Path | None = None) -> list[Path]:
    """Image files under ``root`` (recursive, sorted), optionally only those in ``file_list``
    (one path per line, relative to ``root`` or absolute; written by ``genlab.data.quality``)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise _not_a_folder(root)
    files = sorted(p for p in root.rglob("*") if _is_image(p))
    if file_list is not None:
        listed = Path(file_list)
        if not listed.is_file():
            raise DataError(f"data.file_list={str(listed)!r} does not exist.")
        wanted = {
            (root / line).resolve()
            for line in listed.read_text().splitlines()
            if line.strip() and not line.startswith("#")
        }
        files = [p for p in files if p.resolve() in wanted]
    if not files:
        raise _no_images(root, file_list)
    return files


def has_split_dirs(root: Path) -> bool:
    """The ``train/`` + ``val/`` layout: both folders present."""
    return all((root / d).is_dir() for d in SPLIT_DIRS)


def class_base(root: Path) -> Path:
    """Where the class subfolders sit: ``train/`` in a train/ + val/ layout, else the folder."""
    return root / "train" if has_split_dirs(root) else root


def folder_name(root: Path) -> str:
    """The one class of a flat folder is named after it (``/data/flowers`` -> ``flowers``)."""
    return root.resolve().name or "images"


def classes_of(files: Sequence[Path], base: Path, name: str) -> list[str]:
    """Classes of the image ``files`` below ``base``: their first subfolders, sorted (as
    torchvision's ImageFolder); ``[name]``, one class, when any file sits directly in ``base``."""
    rel = [p.relative_to(base).parts for p in files if p.is_relative_to(base)]
    if not rel:
        return []
    if any(len(parts) == 1 for parts in rel):
        return [name]
    return sorted({parts[0] for parts in rel})


def file_classes(root: Path, files: Sequence[Path]) -> list[str]:
    """The class name of each of ``files`` (all under ``root``), as the data module labels them:
    the folder's name for every file of a flat folder, else the first subfolder below ``root``
    (below ``train/`` or ``val/`` in that layout); ``NO_CLASS`` for a file of that layout
    outside any class folder (which the data module refuses or ignores). Reads no file."""
    base = class_base(root)
    if any(p.parent == base for p in files):  # flat: one class
        return [folder_name(root)] * len(files)
    split = has_split_dirs(root)
    classes = []
    for p in files:
        parts = p.relative_to(root).parts
        if split:
            parts = parts[1:] if parts[0] in SPLIT_DIRS else ()
        classes.append(parts[0] if len(parts) > 1 else NO_CLASS)
    return classes


def folder_classes(root: str | Path, file_list: str | Path | None = None) -> list[str]:
    """``data.class_names`` of a folder (``${folder_classes:${data.path},${data.file_list}}``),
    without reading an image: the subfolders of ``class_base`` that hold an image file (the
    walk stops at the first), or one class named after the folder when an image sits directly
    in it. With ``file_list``, the classes of the listed files. A missing or empty folder
    gives ``[]``: the data module reports the folder itself."""
    root = Path(root).expanduser()
    if not root.is_dir():
        return []
    base = class_base(root)
    if file_list is not None:
        try:
            return classes_of(scan_folder(root, file_list), base, folder_name(root))
        except DataError:
            return []
    entries = sorted(base.iterdir(), key=lambda p: p.name)
    if any(_is_image(p) for p in entries):
        return [folder_name(root)]
    return [d.name for d in entries if d.is_dir() and any(_is_image(p) for p in d.rglob("*"))]


def class_mismatch(declared: list[str], found: list[str], base: Path) -> ConfigError:
    """The config's ``data.class_names`` are not the folder's classes: one line, the fix."""
    return ConfigError(
        f"data.class_names has {len(declared)} classes ({listed_names(declared)}) but {base} "
        f"holds {len(found)} ({listed_names(found)}): a conditional model's labels follow these "
        "names. Drop the data.class_names and data.num_classes overrides (data=image_folder "
        "reads them from the folder), or restore the class folders the run was started with."
    )


def infer_image_size(root: str | Path, sample: int = 200) -> int:
    """``data.image_size: auto``: the largest net size (28, 32, 64, 128, 256) not above the
    median shorter side of up to ``sample`` images spread over the folder (headers only).
    A missing or empty folder gives 64: the data module then reports the folder itself."""
    try:
        files = scan_folder(root)
    except DataError:
        return 64
    picked = files[:: max(1, len(files) // sample)][:sample]
    sides = []
    for path in picked:
        try:
            with Image.open(path) as img:
                sides.append(min(img.size))
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            continue  # reported by the data module; irrelevant to the size
    median = float(np.median(sides)) if sides else 0.0
    return max([s for s in NET_SIZES if s <= median], default=NET_SIZES[0])


@contextmanager
def _pil_reading(path: Path, damaged: str) -> Iterator[None]:
    """Around PIL's reading of ``path``: each way PIL refuses a file becomes a ``BadImage``
    saying why; ``damaged`` names the state of a file PIL recognised but could not read."""
    if path.stat().st_size == 0:
        raise BadImage("empty file (0 bytes)")
    try:
        yield
    except UnidentifiedImageError:
        raise BadImage("not an image PIL can read") from None
    except Image.DecompressionBombError as e:
        # PIL refuses images above 2 x Image.MAX_IMAGE_PIXELS before decoding them: one such
        # file would otherwise need gigabytes of memory, so it is skipped like any other.
        raise BadImage(f"too large to decode ({e})") from None
    # A damaged header can also raise ValueError or SyntaxError (e.g. "Truncated IHDR chunk").
    except (OSError, SyntaxError, ValueError) as e:
        raise BadImage(f"{damaged} ({e})") from None


def _reject_small(size: tuple[int, int], min_size: int) -> None:
    if min(size) < min_size:
        raise BadImage(f"too small ({size[0]}x{size[1]} < {min_size} px)")


def check_header(path: Path, min_size: int = 8) -> None:
    """The cheap checks, from the header without decoding pixels: raise ``BadImage`` if the
    file is empty, not an image, unreadable or too small."""
    with _pil_reading(path, "unreadable"), Image.open(path) as img:
        size = img.size
    _reject_small(size, min_size)


def open_image(path: Path, channels: int, min_size: int = 8) -> Image.Image:
    """Decode ``path`` to an L or RGB PIL image, or raise ``BadImage`` saying why not."""
    with _pil_reading(path, "corrupt or truncated"), Image.open(path) as img:
        img.seek(0)  # first frame of animations
        img.load()  # full decode: catches truncated files that open() accepts
        img = ImageOps.exif_transpose(img)
    _reject_small(img.size, min_size)
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):  # transparency: composite onto white
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    return img.convert("L" if channels == 1 else "RGB")


def resize_crop(img: Image.Image, image_size: int) -> torch.Tensor:
    """Shorter side to ``image_size`` (antialiased), centre crop -> uint8 ``[C, S, S]``."""
    scale = image_size / min(img.size)
    size = (max(image_size, round(img.width * scale)), max(image_size, round(img.height * scale)))
    img = img.resize(size, Image.Resampling.BICUBIC, reducing_gap=None)
    left, top = (img.width - image_size) // 2, (img.height - image_size) // 2
    img = img.crop((left, top, left + image_size, top + image_size))
    array = np.asarray(img, dtype=np.uint8)
    tensor = torch.from_numpy(array.copy())
    return tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1)


class ImageFileDataset(Dataset):
    """(image, label) from files, or from a uint8 cache ``[N, C, S, S]`` of the same files.

    A file that fails to decode (changed or truncated since the scan) is replaced by the next
    readable one and recorded in ``failed``: an epoch never dies on one bad file.
    """

    def __init__(
        self,
        files: Sequence[Path],
        labels: Sequence[int],
        image_size: int,
        channels: int,
        transform=None,
        cache: np.ndarray | None = None,
        min_size: int = 8,
    ) -> None:
        self.files, self.labels = list(files), torch.as_tensor(labels, dtype=torch.long)
        self.image_size, self.channels, self.transform = image_size, channels, transform
        self.cache, self.min_size = cache, min_size
        self.failed: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.files)

    def load(self, i: int) -> torch.Tensor:
        if self.cache is not None:
            return torch.from_numpy(np.array(self.cache[i]))
        return resize_crop(open_image(self.files[i], self.channels, self.min_size), self.image_size)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        for j in range(i, i + len(self)):
            index = j % len(self)
            try:
                pixels = self.load(index)
                break
            except (BadImage, OSError) as e:
                if str(self.files[index]) not in self.failed:
                    log.warning("skipping %s: %s", self.files[index], e)
                self.failed[str(self.files[index])] = str(e)
        else:
            raise DataError("no file in this data set could be decoded")
        image = pixels.float().div_(255)
        if self.transform is not None:
            image = self.transform(image).clamp_(0, 1)
        return image, self.labels[index]


def _open_pixels(path: Path, n: int, shape_tail: tuple[int, ...]) -> np.ndarray | None:
    # mmap cannot map an empty file: a folder without one usable image has no pixels.
    return np.memmap(path, np.uint8, "r", shape=(n, *shape_tail)) if n else None


def _read_cache_meta(
    meta_path: Path, data_path: Path, files: list[Path], shape_tail: tuple[int, ...]
) -> tuple[dict | None, str | None]:
    """``(metadata, None)`` when the cache matches ``files``, else ``(None, what is wrong)``.

    The key in the names covers the file list, so a cache written whole always passes; what
    fails is a damaged one: a truncated pixel file or metadata that is not what was written.
    """
    try:
        meta = json.loads(meta_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"{meta_path.name} is not valid JSON: {e}"
    if (
        not isinstance(meta, dict)
        or not isinstance(meta.get("files"), list)
        or not isinstance(meta.get("skipped"), dict)
        or not all(isinstance(v, str) for v in meta["skipped"].values())
    ):
        return None, f"{meta_path.name} lacks the lists of kept and skipped files"
    # Every scanned file exactly once, kept or skipped, in scan order.
    expected = [str(p) for p in files if str(p) not in meta["skipped"]]
    if meta["files"] != expected or len(meta["files"]) + len(meta["skipped"]) != len(files):
        return None, f"{meta_path.name} does not list the files of this folder"
    size, want = data_path.stat().st_size, len(expected) * int(np.prod(shape_tail))
    if size != want:
        return None, f"{data_path.name} has {size} bytes, {want} expected"
    return meta, None


class ImageFolderDataModule(SplitDataModule):
    """A folder of images: see the module docstring for layout, formats and bad files."""

    def __init__(
        self,
        path: str,
        image_size: int = 64,
        channels: int = 3,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool | str = "auto",
        persistent_workers: bool = False,
        val_fraction: float = 0.05,
        train_fraction: float = 1.0,
        split_seed: int = 42,
        augment: Sequence[str | dict] | None = None,
        file_list: str | None = None,
        cache: bool = False,
        cache_dir: str | None = None,
        min_size: int = 8,
        report_dir: str | None = None,
        samples_per_epoch: int | None = None,
        poisson_sampling: bool = False,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        # More decoding workers than cores only adds contention (and a torch warning).
        workers = min(num_workers, os.cpu_count() or 1)
        if class_names is None:  # built in Python (or an old config): the folder's own
            class_names = folder_classes(path, file_list)
        super().__init__(
            batch_size,
            workers,
            pin_memory,
            persistent_workers,
            samples_per_epoch,
            poisson_sampling=poisson_sampling,
            train_fraction=train_fraction,
            num_classes=num_classes,
            class_names=class_names,
        )
        if channels not in (1, 3):
            raise ConfigError(f"data.channels={channels} must be 1 (grey) or 3 (RGB).")
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction={val_fraction} must be in (0, 1).")
        if cache and not cache_dir:
            raise ConfigError("data.cache=true needs data.cache_dir (default ${paths.cache_dir}).")
        self.path, self.image_size, self.channels = Path(path).expanduser(), image_size, channels
        require_images(self.path, file_list)  # fail at start-up, not after the trainer is built
        self.val_fraction, self.split_seed = val_fraction, split_seed
        self.augment = build_augmentation(augment, image_size)  # checks names at start-up
        self.file_list, self.cache, self.cache_dir = file_list, cache, cache_dir
        self.min_size, self.report_dir = min_size, report_dir
        self.dataset = self.path.name  # names cached FID statistics
        self.images_per_class: dict[str, int] = {}  # usable images (train + val), in setup
        self.skipped: dict[str, str] = {}

    @staticmethod
    def check_config(cfg: Mapping) -> None:
        """Start-up check (``genlab.config.validation.validate``): a missing or empty folder is
        the one line printed, before the config dump and Lightning's banners. So are declared
        classes that are not the folder's (a cheap scan: no image is read)."""
        require_images(cfg["path"], cfg.get("file_list"))
        names, num_classes = cfg.get("class_names"), cfg.get("num_classes")
        if names is None and num_classes is None:  # an old config without the keys
            return
        found = folder_classes(cfg["path"], cfg.get("file_list"))
        _, declared = class_keys(num_classes, found if names is None else list(names))
        if declared != found:
            raise class_mismatch(declared, found, class_base(Path(cfg["path"]).expanduser()))

    # --- scanning -----------------------------------------------------------------------------
    def _has_split_dirs(self) -> bool:
        return has_split_dirs(self.path)

    def _split_files(self, files: list[Path]) -> tuple[list[Path], list[Path]]:
        """Files of ``train/`` and ``val/`` if the folder has that layout, else a seeded split."""
        if self._has_split_dirs():
            parts = {
                d: [p for p in files if p.relative_to(self.path).parts[0] == d] for d in SPLIT_DIRS
            }
            return parts["train"], parts["val"]
        order = torch.randperm(len(files), generator=torch.Generator().manual_seed(self.split_seed))
        n_val = max(1, round(self.val_fraction * len(files)))
        if len(files) - n_val < 1:
            raise DataError(f"{self.path} holds {len(files)} usable image(s): too few to split.")
        val = sorted(files[i] for i in order[:n_val].tolist())
        train = sorted(files[i] for i in order[n_val:].tolist())
        return train, val

    def _val_fix(self, usable: int) -> str:
        """How to get ``MIN_VAL_IMAGES`` validation images out of ``usable`` images."""
        if self._has_split_dirs():
            return f"Put {MIN_VAL_IMAGES} or more images into {self.path / 'val'}/."
        if usable <= MIN_VAL_IMAGES:
            return f"Add images: {usable} usable, {MIN_VAL_IMAGES + 1} at least."
        # round(f * usable) >= MIN_VAL_IMAGES from f >= (MIN_VAL_IMAGES - 0.5) / usable
        fraction = math.ceil(100 * (MIN_VAL_IMAGES - 0.5) / usable) / 100
        return (
            f"Raise data.val_fraction={self.val_fraction} to {fraction} or more ({usable} "
            "usable images), or add images."
        )

    def _check_classes(self, files: list[Path]) -> bool:
        """The classes of the scanned ``files`` (every one, usable or not: a broken file does not
        shift the labels) must be the declared ``class_names``. True: a flat folder, one class."""
        base, name = class_base(self.path), folder_name(self.path)
        found = classes_of(files, base, name)
        if found != self.class_names:
            raise class_mismatch(self.class_names, found, base)
        rel = [p.relative_to(base).parts for p in files if p.is_relative_to(base)]
        flat = any(len(parts) == 1 for parts in rel)
        if flat and any(len(parts) > 1 for parts in rel):
            loose = sum(len(parts) == 1 for parts in rel)
            log.warning(
                "%s holds %d image(s) beside its subfolders: read as one class %r (label 0). "
                "Put every image into a class subfolder to train with classes",
                base, loose, name,
            )  # fmt: skip
        return flat

    def _labels(self, files: list[Path], base: Path, flat: bool) -> list[int]:
        """Label of each file: its first subfolder below ``base`` in ``class_names``; 0 for
        every file of a flat folder. Files of ``val/`` outside train/'s classes: one line."""
        if flat:
            return [0] * len(files)
        index = {c: i for i, c in enumerate(self.class_names)}
        train_dir, classes = self.path / SPLIT_DIRS[0], listed_names(self.class_names)
        labels = []
        for p in files:
            parts = p.relative_to(base).parts
            if len(parts) == 1:
                raise DataError(
                    f"{p} sits in {base}/ outside the class folders of {train_dir}/ "
                    f"({classes}): move the images of {base}/ into "
                    f"{base}/<class>/, one folder per class of {train_dir}/."
                )
            if parts[0] not in index:
                raise DataError(
                    f"{base / parts[0]}/ is a class that {train_dir}/ lacks (its classes: "
                    f"{classes}): add {train_dir / parts[0]}/ with training images, or move "
                    f"{base / parts[0]}/ out of {base}/."
                )
            labels.append(index[parts[0]])
        return labels

    def _check(self, files: list[Path]) -> list[Path]:
        """Headers of every file (cheap); without the cache, decoding problems that only a
        full decode reveals are caught per item later."""
        good = []
        for path in files:
            try:
                check_header(path, self.min_size)
                good.append(path)
            except BadImage as e:
                self.skipped[str(path)] = str(e)
        return good

    def _build_cache(self, files: list[Path]) -> tuple[list[Path], np.ndarray | None]:
        """Decode + resize every file once into ``<cache_dir>/image_folder/<key>.u8`` (pixels)
        and ``<key>.json`` (the files kept and skipped); ``None`` pixels when none is usable."""
        key = hashlib.sha256(f"{self.image_size}-{self.channels}-{self.min_size}".encode())
        for p in files:
            st = p.stat()
            key.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        base = Path(self.cache_dir) / "image_folder" / f"{self.dataset}-{key.hexdigest()[:16]}"
        meta_path, data_path = base.with_suffix(".json"), base.with_suffix(".u8")
        shape_tail = (self.channels, self.image_size, self.image_size)
        if meta_path.is_file() and data_path.is_file():
            meta, problem = _read_cache_meta(meta_path, data_path, files, shape_tail)
            if meta is not None:
                kept = [Path(p) for p in meta["files"]]
                self.skipped.update(meta["skipped"])
                return kept, _open_pixels(data_path, len(kept), shape_tail)
            moved = [m for m in (move_aside(data_path), move_aside(meta_path)) if m]
            names = [str(m) if i == 0 else m.name for i, m in enumerate(moved)]
            log.warning(
                "image-folder cache %s is broken (%s): moved aside to %s; rebuilding it",
                data_path, problem, " and ".join(names) or "(already gone)",
            )  # fmt: skip
        kept, skipped = [], {}
        # Pixels first, then the metadata, each renamed into place whole: a run killed
        # mid-build leaves no cache (or pixels without metadata), which the next run rebuilds.
        with atomic_path(data_path) as tmp, open(tmp, "wb") as out:
            for p in files:
                try:
                    image = resize_crop(
                        open_image(p, self.channels, self.min_size), self.image_size
                    )
                except BadImage as e:
                    skipped[str(p)] = str(e)
                    continue
                out.write(image.numpy().tobytes())
                kept.append(p)
        with atomic_path(meta_path) as tmp:
            tmp.write_text(json.dumps({"files": [str(p) for p in kept], "skipped": skipped}))
        self.skipped.update(skipped)
        log.info("cached %d decoded images in %s", len(kept), data_path)
        return kept, _open_pixels(data_path, len(kept), shape_tail)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        files = scan_folder(self.path, self.file_list)
        flat = self._check_classes(files)
        cache = None
        if self.cache:
            files, cache = self._build_cache(files)
        else:
            files = self._check(files)
        if not files:
            raise DataError(f"none of the images in {self.path} is usable: see {self._report()}")
        position = {p: i for i, p in enumerate(files)}
        train, val = self._split_files(files)
        # Class subfolders sit below train/ and val/ in that layout, else below the root.
        split_dirs = self._has_split_dirs()
        train_labels = self._labels(train, class_base(self.path), flat)
        val_labels = self._labels(val, self.path / "val" if split_dirs else self.path, flat)
        keep = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.split_seed))
        keep = sorted(keep[: max(1, round(self.train_fraction * len(train)))].tolist())
        train, train_labels = [train[i] for i in keep], [train_labels[i] for i in keep]

        def dataset(subset: list[Path], labels: list[int], transform) -> ImageFileDataset:
            rows = None if cache is None else cache[[position[p] for p in subset]]
            return ImageFileDataset(
                subset, labels, self.image_size, self.channels, transform, rows, self.min_size
            )

        self.train_set = dataset(train, train_labels, self.augment)
        self.val_set = dataset(val, val_labels, None)
        self.check_labels(torch.cat([self.train_set.labels, self.val_set.labels]), str(self.path))
        self.test_set = self.val_set  # no separate test split in a folder: scores use val
        self.check_validation_split(f"data.path={str(self.path)!r}", self._val_fix(len(files)))
        per_class = Counter(train_labels + val_labels)
        self.images_per_class = {c: per_class[i] for i, c in enumerate(self.class_names)}
        report = self._report(n_train=len(train), n_val=len(val))
        if self.skipped:
            reasons = Counter(r.split(" (")[0] for r in self.skipped.values())
            log.warning(
                "skipped %d of %d files in %s (%s); list in %s", len(self.skipped),
                len(files) + len(self.skipped), self.path, dict(reasons), report,
            )  # fmt: skip

    def _report(self, **counts: int) -> Path | None:
        if self.report_dir is None:
            return None
        path = Path(self.report_dir) / "data_report.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        content = {
            "path": str(self.path),
            **counts,
            "classes": self.class_names,
            "images_per_class": self.images_per_class,
            "skipped": self.skipped,
        }
        path.write_text(json.dumps(content, indent=2))
        return path

"""Data-quality report and clean file list for a folder of images. Never touches the images.

    python -m genlab.data.quality report data.path=/data/cats
    python -m genlab.data.quality clean data.path=/data/cats
    python train.py data=image_folder data.path=/data/cats \\
        data.file_list=outputs/quality/runs/<time>/clean_files.txt

Both commands check every file and write, into ``outputs/quality/runs/<time>/``:
``report.json`` (counts and the files in each category), ``flagged.png`` (contact sheet of the
flagged images, in the order of ``flagged.txt``) and ``sizes.png`` (histograms of image sizes
and aspect ratios). ``clean`` also writes ``clean_files.txt``: every readable file that is not
flagged, keeping the first file of each duplicate group. ``report.json`` also counts the
readable and the clean images of each class, as ``data=image_folder`` labels them (class
subfolders; a flat folder is one class). Categories: unreadable (with the reason), exact
duplicates (same bytes), near duplicates (perceptual hash within ``near_duplicate_distance``
of 64 bits, confirmed by 32x32 grey thumbnails that differ by at most
``near_duplicate_pixel_diff`` of their contrast), too small, too dark, blank (almost no pixel
variance) and extreme aspect ratios. Files PIL refuses to decode (above its decompression-bomb limit) are
unreadable, like broken ones: reported, never fatal.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import sys
from collections import Counter, defaultdict
from pathlib import Path

import hydra
import imagehash
import numpy as np
import torch
from omegaconf import DictConfig
from torchvision.utils import save_image

from genlab.config.cli import exit_on_user_error
from genlab.config.validation import check_required
from genlab.data.image_folder import (
    NO_CLASS,
    BadImage,
    file_classes,
    open_image,
    resize_crop,
    scan_folder,
)
from genlab.errors import ConfigError
from genlab.utils.paths import project_root

log = logging.getLogger(__name__)
COMMANDS = ("report", "clean")
FLAGS = ("too_small", "too_dark", "blank", "extreme_aspect", "exact_duplicate", "near_duplicate")


def _groups(pairs: list[tuple[int, int]], n: int) -> list[list[int]]:
    """Connected components (sorted index lists, size >= 2) of an undirected pair list."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        parent[find(a)] = find(b)
    members = defaultdict(list)
    for i in range(n):
        members[find(i)].append(i)
    return sorted(sorted(g) for g in members.values() if len(g) > 1)


def near_duplicate_pairs(hashes: list[int | None], max_distance: int) -> list[tuple[int, int]]:
    """Pairs of 64-bit hashes within ``max_distance`` bits. Pigeonhole: split the bits into
    ``max_distance + 1`` bands; two hashes that close agree exactly on at least one band, so only
    hashes sharing a band value are compared (near-linear instead of all pairs)."""
    edges = np.linspace(0, 64, max_distance + 2).astype(int)
    pairs = set()
    for lo, hi in itertools.pairwise(edges):
        mask = (1 << int(hi - lo)) - 1
        buckets = defaultdict(list)
        for i, h in enumerate(hashes):
            if h is not None:  # None: not compared (blank images)
                buckets[(h >> int(lo)) & mask].append(i)
        for members in buckets.values():
            for x, i in enumerate(members):
                for j in members[x + 1 :]:
                    if bin(hashes[i] ^ hashes[j]).count("1") <= max_distance:
                        pairs.add((i, j))
    return sorted(pairs)


def thumbnail_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean |a - b| of two grey thumbnails relative to their contrast (mean pixel std): a
    resized or re-encoded copy scores ~0.00, two different images of one layout (two thin
    handwritten 1s on plain paper) ~0.1 or more even when few pixels differ."""
    return float(np.abs(a - b).mean() / ((a.std() + b.std()) / 2 + 1e-6))


def analyse(files: list[Path], cfg: DictConfig) -> dict:
    """Per-file checks and duplicate groups; returns the report as a plain dict."""
    unreadable: dict[str, str] = {}
    ok: list[Path] = []
    sizes, digests, phashes, thumbs = [], [], [], []
    flags: dict[str, list[str]] = {name: [] for name in FLAGS}
    for path in files:
        try:
            img = open_image(path, channels=3, min_size=1)
        except BadImage as e:
            unreadable[str(path)] = str(e)
            continue
        ok.append(path)
        w, h = img.size
        sizes.append((w, h))
        digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
        pixels = np.asarray(img.resize((64, 64)), dtype=np.float32) / 255
        # Per-channel spread: two colours of equal brightness are not blank.
        blank = pixels.reshape(-1, 3).std(axis=0).max() < cfg.blank_std
        # Blank images all hash alike: they are flagged as blank, not as each other's copies.
        phashes.append(None if blank else int(str(imagehash.phash(img)), 16))
        thumbs.append(np.asarray(img.convert("L").resize((32, 32)), dtype=np.float32))
        if min(w, h) < cfg.min_size:
            flags["too_small"].append(str(path))
        if blank:
            flags["blank"].append(str(path))
        elif pixels.mean() < cfg.dark_mean:
            flags["too_dark"].append(str(path))
        if max(w, h) / min(w, h) > cfg.max_aspect:
            flags["extreme_aspect"].append(str(path))
    by_digest = defaultdict(list)
    for i, d in enumerate(digests):
        by_digest[d].append(i)
    exact = sorted(g for g in by_digest.values() if len(g) > 1)
    # The hash finds candidates; the pixels confirm them. A 64-bit hash is coarse: different
    # images of a similar layout (two handwritten 1s) can hash alike.
    candidates = near_duplicate_pairs(phashes, cfg.near_duplicate_distance)
    confirmed = [
        (i, j)
        for i, j in candidates
        if thumbnail_difference(thumbs[i], thumbs[j]) <= cfg.near_duplicate_pixel_diff
    ]
    near = [g for g in _groups(confirmed, len(ok)) if len({digests[i] for i in g}) > 1]
    # Keep the first file of each group (exact or near); flag the others.
    for g in exact:  # index lists in path order
        flags["exact_duplicate"] += [str(ok[i]) for i in g[1:]]
    for g in near:
        flags["near_duplicate"] += [
            str(ok[i]) for i in g[1:] if str(ok[i]) not in flags["exact_duplicate"]
        ]
    flagged = {p for paths in flags.values() for p in paths}
    clean = [str(p) for p in ok if str(p) not in flagged]
    return {
        "path": str(cfg.data.path),
        "files": len(files),
        "readable": len(ok),
        "unreadable": unreadable,
        "counts": {name: len(paths) for name, paths in flags.items()},
        "flagged": flags,
        "duplicate_groups": {
            "exact": [[str(ok[i]) for i in g] for g in exact],
            "near": [[str(ok[i]) for i in g] for g in near],
        },
        "clean": clean,
        "classes": per_class(Path(cfg.data.path).expanduser(), files, ok, clean),
        "sizes": sizes,
    }


def per_class(root: Path, files: list[Path], ok: list[Path], clean: list[str]) -> dict:
    """``{class name: {"images": readable, "clean": clean}}``, classes as ``data=image_folder``
    labels them, sorted (``NO_CLASS`` last: images outside the class folders of a train/ + val/
    layout); a class whose images are all unreadable shows 0 and 0."""
    names = dict(zip(map(str, files), file_classes(root, files), strict=True))
    readable = Counter(names[str(p)] for p in ok)
    kept = Counter(names[p] for p in clean)
    order = sorted(set(names.values()), key=lambda c: (c == NO_CLASS, c))
    return {c: {"images": readable[c], "clean": kept[c]} for c in order}


def _class_line(classes: dict) -> str:
    """``3 classes, clean images per class: cats 10, dogs 9, fish 8`` (the first 12)."""
    shown = [f"{c} {n['clean']}" for c, n in list(classes.items())[:12]]
    more = f", ... ({len(classes) - 12} more in report.json)" if len(classes) > 12 else ""
    return f"{len(classes)} classes, clean images per class: {', '.join(shown)}{more}"


def _contact_sheet(paths: list[str], out: Path, thumb: int) -> None:
    tiles = []
    for p in paths:
        try:
            tiles.append(resize_crop(open_image(Path(p), 3, 1), thumb).float() / 255)
        except BadImage:  # changed since it was read: a grey tile keeps the flagged.txt order
            tiles.append(torch.full((3, thumb, thumb), 0.5))
    save_image(torch.stack(tiles), out, nrow=8, padding=2, pad_value=1.0)


def _size_histograms(sizes: list[tuple[int, int]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    w, h = np.array(sizes, dtype=float).T
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    # Log counts: the few outliers worth a look would be invisible beside the bulk.
    ax1.hist(np.minimum(w, h), bins=40, log=True)
    ax1.set(title="shorter side", xlabel="pixels", ylabel="images (log)")
    ax2.hist(w / h, bins=40, log=True)
    ax2.set(title="aspect ratio (width / height)", xlabel="ratio")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def run(cfg: DictConfig, command: str) -> dict:
    if command not in COMMANDS:
        raise ConfigError(f"unknown command {command!r}: use one of {COMMANDS}.")
    check_required(cfg)
    root = Path(cfg.data.path).expanduser()
    files = scan_folder(root)
    report = analyse(files, cfg)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    flagged = sorted({p for paths in report["flagged"].values() for p in paths})
    (out / "flagged.txt").write_text("".join(f"{p}\n" for p in flagged))
    if flagged:
        _contact_sheet(flagged[: cfg.contact_sheet_max], out / "flagged.png", cfg.thumb_size)
    if report["sizes"]:
        _size_histograms(report["sizes"], out / "sizes.png")
    sizes = report.pop("sizes")
    report["size_range"] = [min(map(min, sizes)), max(map(max, sizes))] if sizes else None
    if command == "clean":
        lines = [str(Path(p).relative_to(root)) for p in report["clean"]]
        (out / "clean_files.txt").write_text("".join(f"{line}\n" for line in lines))
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(
        f"{report['files']} files, {report['readable']} readable, "
        f"{len(report['unreadable'])} unreadable; flagged: "
        + ", ".join(f"{k} {v}" for k, v in report["counts"].items())
        + f"; {len(report['clean'])} clean.\n{_class_line(report['classes'])}"
        + f"\nreport: {out / 'report.json'}"
        + (f"\nclean file list: {out / 'clean_files.txt'}" if command == "clean" else "")
    )
    return report


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(f"usage: python -m genlab.data.quality {{{'|'.join(COMMANDS)}}} data.path=DIR "
              "[key=value ...]", file=sys.stderr)  # fmt: skip
        sys.exit(2)
    command = sys.argv.pop(1)

    @hydra.main(
        version_base="1.3", config_path=str(Path(project_root()) / "conf"), config_name="quality"
    )
    def _main(cfg: DictConfig) -> None:
        with exit_on_user_error():
            run(cfg, command)

    _main()


if __name__ == "__main__":
    main()

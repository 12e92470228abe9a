"""Write a folder of colour digit images with known problems, to try the image-folder workflow.

    python scripts/make_demo_image_folder.py /tmp/digits128 --images 2000 --size 128

Writes ``--images`` JPEGs: MNIST test digits, tinted with a random colour and upscaled to
``--size`` px, in class subfolders ``0/`` ... ``9/``. Then seeds the problems the data-quality tool
must find, and prints them: 2 exact duplicates, 2 near duplicates (a resized PNG re-save), an
empty file, a text file named .jpg, a truncated JPEG, a 12 px thumbnail, a dark image, a blank
image and a 6:1 banner.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from genlab.data.mnist import MNISTDataModule

ROOT = Path(__file__).resolve().parents[1]


def make_folder(path: Path, n: int, size: int, seed: int = 0) -> list[Path]:
    """``n`` tinted, upscaled MNIST test digits as JPEGs in ``path/<digit>/``."""
    dm = MNISTDataModule(data_dir=str(ROOT / "data"))
    dm.prepare_data()
    images, labels = dm._load(train=False)
    rng = np.random.default_rng(seed)
    files = []
    for i in range(n):
        digit = images[i % len(images), 0].numpy().astype(np.float32) / 255
        ink, paper = rng.integers(128, 256, 3), rng.integers(40, 112, 3)
        rgb = (digit[..., None] * ink + (1 - digit[..., None]) * paper).astype(np.uint8)
        out = path / str(int(labels[i % len(labels)])) / f"{i:05d}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).resize((size, size), Image.Resampling.BICUBIC).save(out, quality=92)
        files.append(out)
    return files


def seed_problems(path: Path, files: list[Path], size: int) -> dict[str, list[str]]:
    rng = np.random.default_rng(1)
    odd = path / "odd"
    odd.mkdir(exist_ok=True)
    seeded: dict[str, list[str]] = {"exact_duplicate": [], "near_duplicate": [], "unreadable": []}
    for src in files[:2]:
        copy = odd / f"copy_of_{src.name}"
        shutil.copy(src, copy)
        seeded["exact_duplicate"].append(str(copy))
    for src in files[2:4]:
        near = odd / f"resized_{src.stem}.png"
        Image.open(src).resize((size * 3 // 4, size * 3 // 4)).save(near)
        seeded["near_duplicate"].append(str(near))
    (odd / "empty.jpg").write_bytes(b"")
    (odd / "notes.jpg").write_text("meeting notes, not a picture")
    data = files[4].read_bytes()
    (odd / "truncated.jpg").write_bytes(data[: len(data) // 3])
    seeded["unreadable"] = [str(odd / n) for n in ("empty.jpg", "notes.jpg", "truncated.jpg")]
    Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(odd / "thumb.png")
    dark = np.full((size, size, 3), 5, np.uint8)
    dark[: size // 4, : size // 4] = 60  # a dim patch in the dark: not blank, but too dark
    Image.fromarray(dark).save(odd / "dark.png")
    Image.new("RGB", (size, size), (200, 200, 200)).save(odd / "blank.png")
    banner = rng.integers(0, 256, (size // 2, size * 3, 3), dtype=np.uint8)
    Image.fromarray(banner).save(odd / "banner.png")
    seeded.update(too_small=[str(odd / "thumb.png")], too_dark=[str(odd / "dark.png")],
                  blank=[str(odd / "blank.png")], extreme_aspect=[str(odd / "banner.png")])  # fmt: skip
    return seeded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--clean", action="store_true", help="no seeded problems")
    args = parser.parse_args()
    files = make_folder(args.path, args.images, args.size)
    print(f"wrote {len(files)} {args.size}px JPEGs to {args.path}/<digit>/")
    if not args.clean:
        for kind, paths in seed_problems(args.path, files, args.size).items():
            print(f"seeded {kind}: {', '.join(Path(p).name for p in paths)}")


if __name__ == "__main__":
    main()

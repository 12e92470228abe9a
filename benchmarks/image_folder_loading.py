"""How much does ``data.cache=true`` save? Epoch time of an image folder, decoded vs cached.

    python benchmarks/image_folder_loading.py --images 2000 --size 256 --image-size 64

Writes ``--images`` JPEGs (``--size`` px, tinted MNIST digits, see
``scripts/make_demo_image_folder.py``) to a temporary folder,
then times one pass over the training split: decoding every JPEG per item, building the cache,
and reading from the cache. Prints the times and the speed-up ratio; no asserts.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from genlab.data.image_folder import ImageFolderDataModule

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from make_demo_image_folder import make_folder


def epoch_seconds(dm: ImageFolderDataModule) -> float:
    start = time.perf_counter()
    for _ in dm.train_dataloader():
        pass
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=256, help="side of the JPEGs on disk")
    parser.add_argument("--image-size", type=int, default=64, help="data.image_size")
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder, cache = Path(tmp) / "images", Path(tmp) / "cache"
        folder.mkdir()
        make_folder(folder, args.images, args.size)
        common = {"path": str(folder), "image_size": args.image_size, "batch_size": 64,
                  "num_workers": args.workers}  # fmt: skip
        plain = ImageFolderDataModule(**common)
        plain.setup()
        decoded = epoch_seconds(plain)
        start = time.perf_counter()
        cached = ImageFolderDataModule(**common, cache=True, cache_dir=str(cache))
        cached.setup()
        build = time.perf_counter() - start
        from_cache = epoch_seconds(cached)
    print(f"{args.images} JPEGs {args.size}px -> {args.image_size}px, {args.workers} workers")
    print(f"epoch decoding JPEGs: {decoded:.2f} s")
    print(f"cache build (once):   {build:.2f} s")
    print(f"epoch from cache:     {from_cache:.2f} s")
    print(f"speed-up per epoch:   {decoded / from_cache:.1f}x")


if __name__ == "__main__":
    main()

"""How sharp a model's reconstructions and samples are, next to real test images.

    python benchmarks/sharpness.py pretrained:vaegan_mnist pretrained:cvae_mnist

Sharpness is the variance of the Laplacian of each image (a standard blur measure: edges give
large second differences, blur flattens them), averaged over the first ``--images`` MNIST test
images and over as many seeded samples, and printed as a ratio to the real images' value (1.0:
as sharp as the data). SSIM and PSNR score how faithful reconstructions are; this scores how
blurred they are, which SSIM does not separate from a misplaced stroke. No asserts: a benchmark
reports.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision import datasets

from genlab.checkpoints.load import load_model
from genlab.checkpoints.pretrained import resolve_checkpoint
from genlab.data.mnist import ensure_raw_files

ROOT = Path(__file__).resolve().parents[1]

LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)


def sharpness(images: torch.Tensor) -> float:
    """Mean per-image variance of the Laplacian of single-channel images in [0, 1]."""
    return F.conv2d(images.float(), LAPLACIAN).flatten(1).var(dim=1).mean().item()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", help="checkpoint paths or pretrained:<name>")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--trust", action="store_true", help="load checkpoints from elsewhere")
    args = parser.parse_args(argv)
    ensure_raw_files(ROOT / "data")  # the shipped MNIST files
    test = datasets.MNIST(ROOT / "data", train=False, download=False)
    images = test.data[: args.images].unsqueeze(1).float() / 255
    labels = test.targets[: args.images].long()
    real = sharpness(images)
    print(f"real test images ({len(images)}): Laplacian variance {real:.4f}")
    print("| checkpoint | reconstructions / real | samples / real |\n|---|---|---|")
    for ckpt in args.checkpoints:
        model, _ = load_model(resolve_checkpoint(ckpt), trust=args.trust)
        with torch.no_grad():
            conditional = getattr(model, "num_classes", 0)
            recon = "-"
            if hasattr(model, "reconstruct"):
                rebuilt = (
                    model.reconstruct(images, labels) if conditional else model.reconstruct(images)
                )
                recon = f"{sharpness(rebuilt) / real:.2f}"
            samples = model.sample(len(images), generator=torch.Generator().manual_seed(0))
        print(f"| {ckpt} | {recon} | {sharpness(samples) / real:.2f} |")


if __name__ == "__main__":
    main()

"""Which digits does a sample file contain? Trains a small MNIST classifier, then labels samples.

    python scripts/digit_coverage.py samples.npy

A quick mode-collapse check for MNIST generators: prints the classifier's test accuracy and the
histogram of predicted classes of the samples (a healthy generator covers all ten, roughly
evenly). The classifier trains in about a minute on 2 CPU cores and is cached next to this
script. Samples are float arrays [n, 1, 28, 28] in [0, 1], as written by sample.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn

from genlab.data.mnist import MNISTDataModule

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "outputs" / "digit_classifier.pt"


def classifier() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
    )  # fmt: skip


def train(epochs: int = 2) -> nn.Module:
    torch.manual_seed(0)
    dm = MNISTDataModule(data_dir=str(ROOT / "data"), batch_size=128)
    dm.prepare_data()
    dm.setup()
    net, loss_fn = classifier(), nn.CrossEntropyLoss()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(epochs):
        for x, y in dm.train_dataloader():
            opt.zero_grad()
            loss_fn(net(x), y).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        correct = sum((net(x).argmax(1) == y).sum().item() for x, y in dm.test_dataloader())
    print(f"classifier test accuracy: {correct / len(dm.test_set):.4f}")
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), CACHE)
    return net


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", type=Path, help=".npy file of [n, 1, 28, 28] floats in [0, 1]")
    args = parser.parse_args()
    if CACHE.exists():
        net = classifier()
        net.load_state_dict(torch.load(CACHE))
        net.eval()
    else:
        net = train()
    samples = torch.from_numpy(np.load(args.samples)).float()
    with torch.no_grad():
        probs = torch.cat([net(b).softmax(1) for b in samples.split(1000)])
    counts = torch.bincount(probs.argmax(1), minlength=10)
    share = counts.float() / counts.sum()
    kl = (share * (share.clamp_min(1e-12) * 10).log()).sum()
    print(f"{len(samples)} samples; predicted-class counts (digits 0-9): {counts.tolist()}")
    print(
        f"classes covered: {(counts > 0).sum().item()}/10; KL(histogram || uniform) = {kl:.4f} nats"
    )
    print(f"mean classifier confidence: {probs.max(1).values.mean():.3f}")


if __name__ == "__main__":
    main()

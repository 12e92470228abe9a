"""Train the MNIST classifier whose features genlab's offline FID/KID/IS/coverage use.

    python scripts/train_mnist_classifier.py            # ~5 min on 2 CPU cores

Trains on the 60k MNIST training images (seeded, +-2 px shifts), reports accuracy on the 10k
test images and writes ``src/genlab/metrics/weights/mnist_classifier.pt`` (the file that ships).
Retraining changes the weights' digest, so cached real statistics are recomputed, and scores
made with the old weights are no longer comparable with new ones.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from genlab.data.mnist import ImageTensorDataset, MNISTDataModule
from genlab.metrics.features import MNIST_CLASSIFIER_WEIGHTS, MNISTClassifier

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", type=Path, default=MNIST_CLASSIFIER_WEIGHTS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    dm = MNISTDataModule(data_dir=str(ROOT / "data"))
    dm.prepare_data()
    train_images, train_labels = dm._load(train=True)
    test_images, test_labels = dm._load(train=False)
    train = DataLoader(ImageTensorDataset(train_images, train_labels, shift=2), 128, shuffle=True)
    test = DataLoader(ImageTensorDataset(test_images, test_labels), 1000)

    net = MNISTClassifier()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=args.epochs * len(train))
    start = time.time()
    for epoch in range(args.epochs):
        net.train()
        for x, y in train:
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        net.eval()
        with torch.no_grad():
            correct = sum((net(x).argmax(1) == y).sum().item() for x, y in test)
        accuracy = correct / len(test.dataset)
        print(f"epoch {epoch + 1}: test accuracy {accuracy:.4f} ({time.time() - start:.0f} s)")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "test_accuracy": accuracy, "epochs": args.epochs}, args.out)
    print(
        f"wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB), test accuracy {accuracy:.4f}"
    )


if __name__ == "__main__":
    main()

"""data.on_device: the whole uint8 set on the device, batches drawn there without a DataLoader."""

from __future__ import annotations

import pytest
import torch

from genlab.data.device_batches import DeviceBatches, random_shift
from genlab.data.mnist import MNISTDataModule
from genlab.errors import ConfigError
from genlab.train import run
from tests.conftest import SHIPPED


def numbered(n: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Image i is filled with the value i, so a batch tells which items it holds."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    return images, torch.arange(n)


def test_an_epoch_is_a_permutation_and_epochs_differ() -> None:
    images, labels = numbered(10)
    loader = DeviceBatches(images, labels, batch_size=4, device="cpu", shuffle=True)
    assert len(loader) == 3  # 4 + 4 + 2
    first = [y for _, y in loader]
    assert [len(y) for y in first] == [4, 4, 2]
    assert sorted(torch.cat(first).tolist()) == list(range(10))
    second = torch.cat([y for _, y in loader])
    assert not torch.equal(torch.cat(first), second), "every epoch got the same order"
    x, y = next(iter(loader))
    assert x.dtype == torch.float32 and x.shape == (4, 1, 4, 4)
    assert torch.allclose(x[:, 0, 0, 0], y.float() / 255)  # the image matches its label
    loader.sampler.set_epoch(0)  # what Lightning does on resume: the same order again
    assert torch.equal(torch.cat([y for _, y in loader]), torch.cat(first))


def test_drop_last_fixed_epoch_length_and_ddp_shards() -> None:
    images, labels = numbered(10)
    loader = DeviceBatches(images, labels, 4, "cpu", shuffle=True, drop_last=True, num_samples=25)
    assert len(loader) == 6 and all(len(y) == 4 for _, y in loader)  # 24 of 25, full batches
    shards = [
        torch.cat([y for _, y in DeviceBatches(images, labels, 5, "cpu", rank=r, world_size=2)])
        for r in (0, 1)
    ]
    assert len(shards[0]) == len(shards[1]) == 5
    assert sorted(torch.cat(shards).tolist()) == list(range(10)), "ranks overlap or miss items"


def test_random_shift_moves_each_image_by_at_most_max_shift() -> None:
    images = torch.zeros(64, 1, 9, 9)
    images[:, 0, 4, 4] = 1.0
    shifted = random_shift(images, 2, torch.Generator().manual_seed(0))
    rows, cols = (shifted[:, 0] == 1).nonzero()[:, 1:].T
    assert len(rows) == 64, "a pixel was lost or duplicated"
    assert (rows - 4).abs().max() <= 2 and (cols - 4).abs().max() <= 2
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) > 10, "shifts not random"


def test_mnist_on_device_matches_the_dataloader_contents() -> None:
    dm = MNISTDataModule(data_dir=str(SHIPPED), train_fraction=0.01, on_device=True)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader, DeviceBatches) and len(loader) == 550 // 64
    x, _ = next(iter(loader))
    assert x.shape == (64, 1, 28, 28) and x.min() >= 0 and x.max() <= 1
    reference = torch.stack([dm.train_set[i][0] for i in range(len(dm.train_set))])
    seen = torch.cat([x for x, _ in loader])
    # Every drawn image is one of the training images, unchanged.
    exact = "donot_use_mm_for_euclid_dist"
    distances = torch.cdist(seen.flatten(1), reference.flatten(1), compute_mode=exact)
    assert distances.min(1).values.max() < 1e-5
    val = torch.cat([x for x, _ in dm.val_dataloader()])
    assert len(val) == 5000  # evaluation: every image once, in order


def test_on_device_refuses_torchvision_transforms() -> None:
    dm = MNISTDataModule(
        data_dir=str(SHIPPED), train_fraction=0.01, on_device=True, augment=["hflip"]
    )
    dm.setup("fit")
    with pytest.raises(ConfigError, match="on_device=true needs"):
        dm.train_dataloader()


def test_train_py_runs_with_on_device_data(make_cfg) -> None:
    cfg = make_cfg("data.on_device=true", "data.augment=true", "+trainer.fast_dev_run=2")
    run(cfg)

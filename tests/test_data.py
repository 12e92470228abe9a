"""MNISTDataModule: shipped files, splits, ranges, and the errors a user sees."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torchvision import datasets

from genlab.config.validation import validate
from genlab.data.mnist import MNISTDataModule, ensure_raw_files, raw_file_names
from genlab.errors import ConfigError, DataError
from tests.conftest import SHIPPED


@pytest.fixture(scope="module")
def mnist() -> MNISTDataModule:
    dm = MNISTDataModule(data_dir=str(SHIPPED), batch_size=32)
    dm.prepare_data()
    dm.setup()
    return dm


def test_split_sizes_and_image_format(mnist: MNISTDataModule) -> None:
    assert (len(mnist.train_set), len(mnist.val_set), len(mnist.test_set)) == (
        55_000,
        5_000,
        10_000,
    )
    images, labels = next(iter(mnist.train_dataloader()))
    assert images.shape == (32, 1, 28, 28) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1 and images.max() > 0.9
    assert labels.shape == (32,) and labels.dtype == torch.int64
    assert mnist.num_classes == 10 and set(labels.tolist()) <= set(range(mnist.num_classes))


def test_split_is_seeded_and_disjoint(mnist: MNISTDataModule) -> None:
    again = MNISTDataModule(data_dir=str(SHIPPED))
    again.setup("fit")
    assert torch.equal(again.val_set.images, mnist.val_set.images)
    other = MNISTDataModule(data_dir=str(SHIPPED), split_seed=1)
    other.setup("fit")
    assert not torch.equal(other.val_set.images, mnist.val_set.images)
    # No validation image is also a training image (byte-identical duplicates aside).
    train_keys = {hash(x.numpy().tobytes()) for x in mnist.train_set.images[:20_000]}
    val_keys = [hash(x.numpy().tobytes()) for x in mnist.val_set.images[:500]]
    assert sum(k in train_keys for k in val_keys) <= 2


def test_train_fraction_shrinks_only_training() -> None:
    dm = MNISTDataModule(data_dir=str(SHIPPED), train_fraction=0.1)
    dm.setup("fit")
    assert len(dm.train_set) == 5_500 and len(dm.val_set) == 5_000


def test_samples_per_epoch_fixes_the_epoch_length() -> None:
    # 550 images, 2000 samples per epoch: every image shows up 3-4 times, no batch is partial.
    dm = MNISTDataModule(
        data_dir=str(SHIPPED), train_fraction=0.01, batch_size=100, samples_per_epoch=2000
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert len(dm.train_set) == 550 and len(loader) == 20
    seen = torch.cat([x.flatten(1) for x, _ in loader])
    assert seen.shape[0] == 2000 and torch.unique(seen, dim=0).shape[0] <= 550
    assert len(dm.val_dataloader().dataset) == 5_000  # evaluation never repeats
    with pytest.raises(ConfigError, match="samples_per_epoch=50 is below"):
        MNISTDataModule(data_dir=str(SHIPPED), batch_size=100, samples_per_epoch=50)


def test_resize_grey_to_rgb_and_augment() -> None:
    dm = MNISTDataModule(
        data_dir=str(SHIPPED), image_size=32, channels=3, augment=True, train_fraction=0.01
    )
    dm.setup("fit")
    image, _ = dm.train_set[0]
    assert image.shape == (3, 32, 32) and image.min() >= 0 and image.max() <= 1
    torch.manual_seed(0)
    shifted = [dm.train_set[0][0] for _ in range(8)]
    assert any(not torch.equal(shifted[0], s) for s in shifted[1:]), "augment=True never shifted"
    assert all(abs(s.sum() - shifted[0].sum()) < 0.05 * shifted[0].sum() for s in shifted)


def _copy_gz(dst: Path) -> Path:
    raw = dst / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in raw_file_names(datasets.MNIST):
        shutil.copy(SHIPPED / "MNIST" / "raw" / f"{name}.gz", raw)
    shutil.copy(SHIPPED / "MNIST" / "SHA256SUMS.raw", dst / "MNIST")
    return raw


def test_decompresses_shipped_gz_and_verifies(tmp_path: Path) -> None:
    raw = _copy_gz(tmp_path)
    ensure_raw_files(tmp_path, "mnist", download=False)
    for name in raw_file_names(datasets.MNIST):
        assert (raw / name).stat().st_size > 0


def test_corrupt_gz_is_rejected_without_leaving_a_file(tmp_path: Path) -> None:
    raw = _copy_gz(tmp_path)
    with gzip.open(raw / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"not mnist")
    with pytest.raises(DataError, match="SHA-256 mismatch"):
        ensure_raw_files(tmp_path, "mnist", download=False)
    assert not (raw / "t10k-labels-idx1-ubyte").exists()
    assert not (raw / "t10k-labels-idx1-ubyte.partial").exists()


def test_missing_data_names_files_and_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(datasets.MNIST, "download", offline)
    with pytest.raises(DataError) as err:
        MNISTDataModule(data_dir=str(tmp_path)).prepare_data()
    message = str(err.value)
    assert "download failed" in message and "network is unreachable" in message
    assert str((tmp_path / "MNIST" / "raw").resolve()) in message
    assert "train-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message


def test_bad_options_are_named() -> None:
    with pytest.raises(ValueError, match=r"data\.dataset=.cifar. is unknown"):
        MNISTDataModule(dataset="cifar")
    with pytest.raises(ValueError, match="train_fraction"):
        MNISTDataModule(train_fraction=0)


def test_cifar10_offline_is_one_clear_error(tmp_path: Path) -> None:
    dm = MNISTDataModule(data_dir=str(tmp_path), dataset="cifar10", download=False)
    with pytest.raises(DataError, match=r"cifar10 is not in .*download is disabled"):
        dm.prepare_data()


def test_mnist_augment_list_applies_to_training_only() -> None:
    dm = MNISTDataModule(
        data_dir=str(SHIPPED), augment=["shift", {"name": "rotate", "degrees": 15}]
    )
    dm.setup("fit")
    torch.manual_seed(0)
    draws = [dm.train_set[0][0] for _ in range(6)]
    assert draws[0].shape == (1, 28, 28) and draws[0].min() >= 0 and draws[0].max() <= 1
    assert any(not torch.equal(draws[0], d) for d in draws[1:])
    assert torch.equal(dm.val_set[0][0], dm.val_set[0][0])


def test_val_size_beyond_the_set_names_itself_the_size_and_the_range(make_cfg) -> None:
    # It used to blame data.batch_size and advise "0 or less".
    message = (
        r"data.val_size=60000 leaves no training images: the mnist training set holds 60000, "
        r".*Use 2 to 59999 \(default 5000\)"
    )
    with pytest.raises(ConfigError, match=message):
        validate(make_cfg("data.val_size=60000"))  # at start-up, before any file is read
    with pytest.raises(ConfigError, match=message) as err:  # and from the file itself
        MNISTDataModule(data_dir=str(SHIPPED), val_size=60000).setup("fit")
    assert "batch_size=" not in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"val_size=50001 .* cifar10 training set holds 50000"):
        validate(make_cfg("data=cifar10", "data.val_size=50001"))
    validate(make_cfg("data.val_size=59999"))  # the top of the range passes


def test_one_validation_image_is_refused_at_setup_under_a_trainer() -> None:
    dm = MNISTDataModule(data_dir=str(SHIPPED), val_size=1)
    dm.setup("fit")  # inspected without a Trainer: any split
    assert len(dm.val_set) == 1
    dm = MNISTDataModule(data_dir=str(SHIPPED), val_size=1)
    dm.trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(DataError) as err:
        dm.setup("fit")  # what trainer.fit calls first: before any training step
    assert str(err.value).startswith(
        "data.val_size=1 leaves 1 validation image(s) and 59999 for training: validation needs >= 2"
    )
    assert str(err.value).endswith("Set data.val_size to 2 or more (default 5000).")

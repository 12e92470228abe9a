"""What every genlab data module shares: train/val/test datasets and the loaders over them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from genlab.config.rules import AT_LEAST_ONE, FRACTION, NON_NEGATIVE, Range
from genlab.config.validation import check_rule
from genlab.data.device_batches import DeviceBatches
from genlab.data.loader import ResumableLoader
from genlab.errors import ConfigError, DataError

# Fewest validation images a training run accepts: FID and KID (the sample-quality monitor,
# callbacks.fid) need 2, and below that the callback skips them, so checkpointing would wait for
# a monitor that never comes; nor is one image a basis for picking the best checkpoint.
MIN_VAL_IMAGES = 2
# data.num_classes: a whole count (0 only for a bare module without labels, or a missing folder
# that its data module then reports).
CLASS_COUNT = Range(ge=0, integer=True)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def listed_names(names: Sequence[str], most: int = 10) -> str:
    """``a, b, c`` (the first ``most`` names, then how many more): class lists in one line."""
    shown = ", ".join(map(str, names[:most]))
    return shown + (f", ... ({len(names) - most} more)" if len(names) > most else "")


def class_keys(num_classes: int | None, class_names: Sequence[str] | None) -> tuple[int, list[str]]:
    """``data.num_classes`` and ``data.class_names`` made whole: either one gives the other
    (names ``"0"``, ``"1"``, ... for a bare count); both given must agree, else one line."""
    names = None if class_names is None else [str(c) for c in class_names]
    if names is not None and len(set(names)) != len(names):
        twice = sorted({c for c in names if names.count(c) > 1})
        raise ConfigError(
            f"data.class_names names {listed_names(twice)} more than once: each class needs its "
            "own name. Fix the list, or drop the data.class_names override (it follows the data)."
        )
    if num_classes is None:
        num_classes = 0 if names is None else len(names)
    check_rule("data.num_classes", num_classes, CLASS_COUNT)
    if names is None:
        names = [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ConfigError(
            f"data.class_names lists {len(names)} names but data.num_classes={num_classes}: give "
            "one name per class, or drop the overrides (both follow the data by default)."
        )
    return num_classes, names


class SplitDataModule(pl.LightningDataModule):
    """Subclasses fill ``train_set``, ``val_set`` and ``test_set`` in ``setup``.

    ``num_classes`` and ``class_names`` say what ``batch[1]`` holds: labels in
    ``[0, num_classes)``, label ``i`` of class ``class_names[i]``. A conditional model reads them
    through ``${data.num_classes}``; a subclass derives them from its data when the config gives
    none, and checks what it loads against them in ``setup`` (``check_labels``)."""

    def __init__(
        self,
        batch_size: Annotated[int, AT_LEAST_ONE],
        num_workers: Annotated[int, NON_NEGATIVE],
        pin_memory: bool | str,
        persistent_workers: bool,
        samples_per_epoch: Annotated[int, AT_LEAST_ONE] | None = None,
        on_device: bool = False,
        poisson_sampling: bool = False,
        *,
        train_fraction: Annotated[float, FRACTION] = 1.0,
        num_classes: Annotated[int, NON_NEGATIVE] | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        # Also checked here, not only at start-up: a data module built in Python skips that.
        check_rule("data.train_fraction", train_fraction, FRACTION)
        if poisson_sampling and on_device:
            raise ConfigError(
                "data.poisson_sampling=true (differentially private training) needs the "
                "DataLoader path: set data.on_device=false."
            )
        if samples_per_epoch is not None and samples_per_epoch < batch_size:
            raise ConfigError(
                f"data.samples_per_epoch={samples_per_epoch} is below data.batch_size="
                f"{batch_size}: an epoch would hold no full batch. Use null (the whole set) or "
                "a larger number."
            )
        if pin_memory == "auto":  # pinned pages only pay off when batches go to a GPU
            pin_memory = torch.cuda.is_available()
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.samples_per_epoch = samples_per_epoch
        self.on_device, self.poisson_sampling = on_device, poisson_sampling
        # The seeded share of the training split a subclass keeps in setup.
        self.train_fraction = train_fraction
        self.num_classes, self.class_names = class_keys(num_classes, class_names)
        self.train_set = self.val_set = self.test_set = None

    def check_labels(self, labels: torch.Tensor, where: str) -> None:
        """Labels ``where`` holds (a split, a folder) must lie in ``[0, num_classes)``: what the
        config declares to the model is what the data gives, or one line before training."""
        if not len(labels):
            return
        low, high = int(labels.min()), int(labels.max())
        if low >= 0 and high < self.num_classes:
            return
        fix = (
            f"Set data.num_classes={high + 1} with as many data.class_names"
            if low >= 0
            else "Give every image a class"
        )
        raise ConfigError(
            f"data.num_classes={self.num_classes} but {where} holds labels {low} to {high}, "
            f"outside [0, {self.num_classes}). {fix}, or drop the data.num_classes and "
            "data.class_names overrides (both follow the data by default)."
        )

    def check_validation_split(self, where: str, fix: str) -> None:
        """Under a Trainer, refuse a validation split too small to validate on, at setup: before
        training, not after the first epoch. ``where`` names the data, ``fix`` the keys to change.
        (Without a Trainer, e.g. a quality tool or a test, any split may be inspected.)"""
        if self.trainer is None or self.val_set is None or len(self.val_set) >= MIN_VAL_IMAGES:
            return
        raise DataError(
            f"{where} leaves {len(self.val_set)} validation image(s) and {len(self.train_set)} "
            f"for training: validation needs >= {MIN_VAL_IMAGES} (val/fid and val/kid need "
            f"{MIN_VAL_IMAGES}; below that the monitor is never logged). {fix}"
        )

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader | DeviceBatches:
        if self.on_device:
            return self._device_batches(dataset, shuffle)
        # samples_per_epoch: a fixed epoch length whatever the set's size (reshuffled passes),
        # so runs on 1% and 100% of the data get the same number of updates and validations.
        size = self.samples_per_epoch if shuffle and self.samples_per_epoch else len(dataset)
        if shuffle and size < self.batch_size:
            raise ConfigError(
                f"data.batch_size={self.batch_size} is larger than the {size} training images "
                f"{type(self).__name__} holds with these settings: an epoch would be one partial "
                f"batch (no full batch to drop_last to). Lower data.batch_size to {size} or "
                "less, use more data (data.train_fraction), or set data.samples_per_epoch."
            )
        common = {
            "batch_size": self.batch_size,
            # Full training batches keep BatchNorm statistics sane (unless the set is tiny).
            "drop_last": shuffle and size > self.batch_size,
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "persistent_workers": self.persistent_workers,
        }
        trainer = self.trainer
        if shuffle and (trainer is None or trainer.world_size == 1):
            # Resumable mid-epoch, batch for batch. (Under DDP Lightning swaps in its own
            # distributed sampler: resume there from an end-of-epoch last.ckpt.)
            loader = ResumableLoader(
                dataset,
                seed=torch.initial_seed(),  # seed_everything's seed
                num_samples=size,
                poisson=self.poisson_sampling,
                **common,
            )
            # The first pass is drawn before Lightning calls set_epoch: start at the epoch a
            # resumed run is in, not at 0.
            loader.order.set_epoch(trainer.current_epoch if trainer is not None else 0)
            return loader
        if shuffle and self.poisson_sampling:
            raise ConfigError(
                "data.poisson_sampling=true (differentially private training) runs on one "
                f"device; this trainer has {trainer.world_size} processes. Use trainer=cpu or "
                "trainer=gpu with devices=1."
            )
        sampler = None
        if shuffle and self.samples_per_epoch:
            sampler = RandomSampler(dataset, num_samples=self.samples_per_epoch)
        return DataLoader(
            dataset,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            # Every iter() draws a worker base seed; from the global RNG that would shift the
            # training noise whenever a callback first reads a validation batch (a resumed run
            # does that one epoch later than the run it continues).
            generator=torch.Generator().manual_seed(torch.initial_seed()),
            **common,
        )

    def _device_batches(self, dataset: Dataset, shuffle: bool) -> DeviceBatches:
        images = getattr(dataset, "images", None)
        if getattr(images, "dtype", None) != torch.uint8 or getattr(dataset, "transform", None):
            raise ConfigError(
                f"data.on_device=true needs an in-memory uint8 set without torchvision "
                f"transforms; {type(self).__name__} with these settings gives "
                f"{type(dataset).__name__}. Use data=mnist (or its look-alikes, cifar10) with "
                "augment=false|true, or data.on_device=false."
            )
        trainer = self.trainer
        size = self.samples_per_epoch if shuffle and self.samples_per_epoch else len(dataset)
        batches = DeviceBatches(
            images,
            dataset.labels,
            self.batch_size,
            # Outside a Trainer (a plain loop): the GPU when there is one.
            device=trainer.strategy.root_device if trainer else default_device(),
            shuffle=shuffle,
            drop_last=shuffle and size > self.batch_size,
            num_samples=size,
            channels=dataset.channels,
            shift=dataset.shift if shuffle else 0,
            binarize=dataset.binarize if shuffle else False,
            seed=torch.initial_seed(),  # seed_everything's seed: the same on every DDP rank
            rank=trainer.global_rank if trainer else 0,
            world_size=trainer.world_size if trainer else 1,
        )
        if trainer is not None:  # the first pass is drawn before Lightning calls set_epoch
            batches.sampler.set_epoch(trainer.current_epoch)
        return batches

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)

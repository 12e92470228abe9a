"""What every genlab data module shares: train/val/test datasets and the loaders over them."""

from __future__ import annotations

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset, RandomSampler

from genlab.errors import ConfigError


class SplitDataModule(pl.LightningDataModule):
    """Subclasses fill ``train_set``, ``val_set`` and ``test_set`` in ``setup``."""

    def __init__(
        self,
        batch_size: int,
        num_workers: int,
        pin_memory: bool,
        persistent_workers: bool,
        samples_per_epoch: int | None = None,
    ) -> None:
        super().__init__()
        if samples_per_epoch is not None and samples_per_epoch < batch_size:
            raise ConfigError(
                f"data.samples_per_epoch={samples_per_epoch} is below data.batch_size="
                f"{batch_size}: an epoch would hold no full batch. Use null (the whole set) or "
                "a larger number."
            )
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.samples_per_epoch = samples_per_epoch
        self.train_set = self.val_set = self.test_set = None

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        # samples_per_epoch: a fixed epoch length whatever the set's size (reshuffled passes),
        # so runs on 1% and 100% of the data get the same number of updates and validations.
        sampler = None
        if shuffle and self.samples_per_epoch:
            sampler = RandomSampler(dataset, num_samples=self.samples_per_epoch)
        size = len(sampler) if sampler is not None else len(dataset)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            # Full training batches keep BatchNorm statistics sane (unless the set is tiny).
            drop_last=shuffle and size > self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)

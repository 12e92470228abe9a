"""What every genlab data module shares: train/val/test datasets and the loaders over them."""

from __future__ import annotations

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset


class SplitDataModule(pl.LightningDataModule):
    """Subclasses fill ``train_set``, ``val_set`` and ``test_set`` in ``setup``."""

    def __init__(
        self, batch_size: int, num_workers: int, pin_memory: bool, persistent_workers: bool
    ) -> None:
        super().__init__()
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.train_set = self.val_set = self.test_set = None

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            # Full training batches keep BatchNorm statistics sane (unless the set is tiny).
            drop_last=shuffle and len(dataset) > self.batch_size,
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

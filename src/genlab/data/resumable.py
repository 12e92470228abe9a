"""A training loader that a checkpoint can stop and restart mid-epoch, batch for batch.

Lightning saves the ``state_dict`` of a training loader that has one and, when it resumes from
a checkpoint written mid-epoch (a SIGTERM, ``callbacks.interrupt.every_n_batches``), hands it
back before the first batch is drawn. Three things make the rest of the epoch identical to the
one the interrupted run would have seen:

- the order is a function of ``(seed, epoch)`` alone (``ResumableSampler``), so it can be
  redrawn and the batches already trained on skipped;
- the random augmentation of each item is a function of ``(seed, epoch, position)``
  (``SeededItems``), not of the global RNG, which the training step also draws from and which
  a prefetched batch would otherwise have advanced before the checkpoint was written;
- the loader's own seed draw comes from a private generator, not the global RNG.

The global RNG states themselves are saved and restored by
``genlab.callbacks.rng_states.RNGStates``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

# Distinct odd multipliers keep (seed, epoch, position) -> item seed free of easy collisions.
_EPOCH_STRIDE = 1_000_003
_POSITION_STRIDE = 7_919


def item_seed(seed: int, epoch: int, position: int) -> int:
    return (seed * 31 + epoch * _EPOCH_STRIDE + position * _POSITION_STRIDE) % (2**63 - 1)


class ResumableSampler(Sampler):
    """Shuffled indices, ``num_samples`` per epoch (reshuffled passes when it exceeds the set),
    drawn from ``seed + epoch``. Yields ``(index, item_seed)`` pairs for ``SeededItems``.

    Lightning calls ``set_epoch`` before every epoch; outside Lightning each pass advances the
    epoch itself, so a plain loop gets a new order every pass too.
    """

    def __init__(self, size: int, num_samples: int | None = None, seed: int = 0) -> None:
        self.size, self.num_samples, self.seed = size, num_samples or size, seed
        self.epoch, self.start = 0, 0
        self.pass_epoch = 0  # the epoch of the pass being drawn (``epoch`` is the next one's)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, start = self.epoch, self.start
        self.pass_epoch, self.epoch, self.start = (
            epoch,
            epoch + 1,
            0,
        )  # a later pass (outside Lightning) moves on
        generator = torch.Generator().manual_seed(self.seed + epoch)
        passes = -(-self.num_samples // self.size)
        order = torch.cat([torch.randperm(self.size, generator=generator) for _ in range(passes)])
        for position in range(start, self.num_samples):
            yield int(order[position]), item_seed(self.seed, epoch, position)


class SeededItems(Dataset):
    """``dataset[(index, seed)]`` draws the item's random transforms from ``seed``; the global
    RNG is left as it was. Plain integer keys (validation, test) read the item unchanged."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:  # images, labels, channels, ... of the wrapped set
        if name == "dataset":  # not set yet (unpickling in a worker)
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        if not isinstance(key, tuple):
            return self.dataset[key]
        index, seed = key
        # The CPU generator only: torch.manual_seed would also seed CUDA, ~100x the cost.
        state = torch.get_rng_state()
        torch.default_generator.manual_seed(seed)
        try:
            return self.dataset[index]
        finally:
            torch.set_rng_state(state)


class ResumableLoader(DataLoader):
    """A ``DataLoader`` over ``SeededItems`` with a ``ResumableSampler`` and a checkpointable
    position. ``progress`` returns how many batches of the current epoch have been trained on
    (the data module reads it from the trainer: the loader itself runs a batch ahead)."""

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        seed: int,
        num_samples: int | None = None,
        progress: Callable[[], int] | None = None,
        **kwargs: Any,
    ) -> None:
        sampler = ResumableSampler(len(dataset), num_samples, seed)  # type: ignore[arg-type]
        super().__init__(
            SeededItems(dataset),
            batch_size=batch_size,
            sampler=sampler,
            # Worker seeds come from here, not from the global RNG (see the module docstring).
            generator=torch.Generator().manual_seed(seed),
            **kwargs,
        )
        self.seed, self.num_samples, self.progress = seed, num_samples, progress

    def state_dict(self) -> dict[str, int]:
        batches = self.progress() if self.progress is not None else 0
        return {"epoch": self.sampler.pass_epoch, "batches": batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, batches = state["epoch"], state["batches"]
        if batches >= len(self):  # saved on the epoch's last batch: the next epoch starts fresh
            epoch, batches = epoch + 1, 0
        self.sampler.set_epoch(epoch)
        self.sampler.start = batches * self.batch_size

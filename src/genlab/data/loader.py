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

``poisson=True`` (differentially private training) replaces the shuffled fixed-size batches
with Poisson sampling: every batch takes each item independently with probability
``batch_size / len(dataset)``, the sampling that DP-SGD's privacy accounting assumes. Each
batch's draw is a function of ``(seed, epoch, batch)``, so it resumes exactly too.

How far the epoch got is counted by ``genlab.resume.progress.BatchProgress`` (a callback: the
loader itself runs a batch ahead of training) through ``mark_trained``. The global RNG states
are saved and restored by ``genlab.resume.rng.RNGStates``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

# Distinct odd multipliers keep (seed, epoch, position) -> item seed free of easy collisions.
_EPOCH_STRIDE = 1_000_003
_POSITION_STRIDE = 7_919


def item_seed(seed: int, epoch: int, position: int) -> int:
    return (seed * 31 + epoch * _EPOCH_STRIDE + position * _POSITION_STRIDE) % (2**63 - 1)


def resume_position(state: dict[str, int], batches_per_epoch: int) -> tuple[int, int]:
    """A checkpointed ``{"epoch", "batches"}`` -> (epoch, batches to skip) of the next batch.
    Saved on an epoch's last batch (or after it): the next epoch starts fresh."""
    epoch, batches = state["epoch"], state["batches"]
    return (epoch + 1, 0) if batches >= batches_per_epoch else (epoch, batches)


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


class PoissonBatchSampler(Sampler):
    """``num_samples // batch_size`` batches per epoch; each takes every item independently
    with probability ``sample_rate = batch_size / size``, so batch sizes vary around
    ``batch_size``. Yields lists of ``(index, item_seed)`` pairs for ``SeededItems``."""

    def __init__(self, size: int, batch_size: int, num_samples: int | None = None, seed: int = 0):
        self.size, self.seed = size, seed
        self.sample_rate = batch_size / size
        self.steps = max(1, (num_samples or size) // batch_size)
        self.epoch, self.start = 0, 0  # ``start`` counts batches here
        self.pass_epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, start = self.epoch, self.start
        self.pass_epoch, self.epoch, self.start = epoch, epoch + 1, 0
        for step in range(start, self.steps):
            generator = torch.Generator().manual_seed(item_seed(self.seed, epoch, step))
            chosen = (torch.rand(self.size, generator=generator) < self.sample_rate).nonzero()
            # An empty draw (probability (1 - q)^N: e^-128 for MNIST at batch 128) cannot be
            # collated; it is skipped, so its (noise-only) DP step is not taken or counted.
            if len(chosen):
                first = (epoch * self.steps + step) * self.size
                yield [
                    (i, item_seed(self.seed, epoch, first + i)) for i in chosen.flatten().tolist()
                ]


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
    position: the batches of the current epoch trained on, as told by ``mark_trained``."""

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        seed: int,
        num_samples: int | None = None,
        poisson: bool = False,
        **kwargs: Any,
    ) -> None:
        size = len(dataset)  # type: ignore[arg-type]
        # Worker seeds come from a private generator, not from the global RNG (module docstring).
        common = {"generator": torch.Generator().manual_seed(seed), **kwargs}
        if poisson:
            common.pop("drop_last", None)  # batch sizes vary by design
            order = PoissonBatchSampler(size, batch_size, num_samples, seed)
            super().__init__(SeededItems(dataset), batch_sampler=order, **common)
            self.sample_rate: float | None = order.sample_rate
        else:
            order = ResumableSampler(size, num_samples, seed)
            super().__init__(SeededItems(dataset), batch_size=batch_size, sampler=order, **common)
            self.sample_rate = None
        self.order, self.expected_batch_size = order, batch_size
        self.seed, self.num_samples = seed, num_samples
        self.batches_trained = 0

    def __iter__(self) -> Iterator[Any]:
        # A new pass starts where load_state_dict put it (0, or the batches already trained).
        start = self.order.start
        self.batches_trained = start if self.sample_rate else start // self.expected_batch_size
        return super().__iter__()

    def mark_trained(self, batches: int) -> None:
        """``batches`` of the current epoch are trained on (``EPOCH_DONE``: all of them)."""
        self.batches_trained = batches

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.order.pass_epoch, "batches": self.batches_trained}

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, batches = resume_position(state, len(self))
        self.order.set_epoch(epoch)
        # The Poisson sampler counts batches, the shuffling one items.
        self.order.start = batches if self.sample_rate else batches * self.expected_batch_size
        self.batches_trained = batches

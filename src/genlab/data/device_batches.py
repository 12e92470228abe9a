"""Batches drawn from a whole uint8 dataset that lives on the training device.

    python train.py data.on_device=true trainer=gpu       # MNIST: 47 MB of uint8 on the GPU

For MNIST-sized sets a DataLoader is pure overhead on a GPU: per-item Python, collation and a
host-to-device copy every step. Here the set is copied to the device once; each batch is one
index into it, converted to float in [0, 1] there. Shuffling, ``drop_last``, a fixed epoch
length (``samples_per_epoch``), DDP sharding, the +-2 px shifts of ``augment=true`` and
dynamic binarisation all happen on the device too.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from genlab.data.loader import item_seed, resume_position


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by its own (dx, dy) in [-max_shift, max_shift], zero fill."""
    n, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4)
    offsets = torch.randint(
        0, 2 * max_shift + 1, (2, n), generator=generator, device=generator.device
    ).to(images.device)
    rows = (torch.arange(h, device=images.device) + offsets[0, :, None])[:, :, None]  # [n,h,1]
    cols = (torch.arange(w, device=images.device) + offsets[1, :, None])[:, None, :]  # [n,1,w]
    batch = torch.arange(n, device=images.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # [n,c,h,w]


class EpochCounter:
    """Where Lightning finds ``set_epoch``: the epoch picks the shuffling order, so a resumed
    run continues with the order the interrupted one would have drawn."""

    def __init__(self) -> None:
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


class DeviceBatches:
    """An iterable of ``(images, labels)`` batches, like a DataLoader, with no worker or copy.

    ``images``: uint8 ``[N, C, H, W]`` (moved to ``device`` once); batches are float32 in
    [0, 1] with ``channels`` channels. With ``shuffle``, each epoch draws a new permutation
    from ``seed + epoch`` (identical on every DDP rank, each of which takes every
    ``world_size``-th index), so a resumed or restarted epoch sees the same order.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        device: torch.device | str,
        shuffle: bool = False,
        drop_last: bool = False,
        num_samples: int | None = None,
        channels: int = 1,
        shift: int = 0,
        binarize: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.num_samples = num_samples or len(images)
        self.channels, self.shift, self.binarize = channels, shift, binarize
        self.seed, self.rank, self.world_size = seed, rank, world_size
        # Lightning inspects these like a DataLoader's: it calls sampler.set_epoch before each
        # epoch (a resumed run draws the order the interrupted one would have drawn).
        self.sampler, self.batch_sampler = EpochCounter(), None
        self.pass_epoch, self.start = 0, 0
        self.batches_trained = 0  # of this epoch, told by mark_trained (for checkpoints)

    def _per_rank(self) -> int:
        return -(-self.num_samples // self.world_size)  # ceil: every rank gets as many

    def __len__(self) -> int:
        n = self._per_rank()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _order(self, generator: torch.Generator) -> torch.Tensor:
        n = len(self.images)
        if not self.shuffle:
            order = torch.arange(n, device=self.device)
        else:  # enough passes for num_samples, each its own permutation
            passes = -(-self.num_samples // n)
            order = torch.cat(
                [torch.randperm(n, generator=generator, device=self.device) for _ in range(passes)]
            )
        order = order[: self.num_samples]
        # Pad by wrapping so every rank gets the same number of items, then shard.
        padded = self._per_rank() * self.world_size
        order = torch.cat([order, order[: padded - len(order)]]) if padded > len(order) else order
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, start = self.sampler.epoch, self.start
        # Outside Lightning (no set_epoch), the next pass gets a new order too.
        self.pass_epoch, self.sampler.epoch, self.start = epoch, epoch + 1, 0
        self.batches_trained = start
        order = self._order(torch.Generator(device=self.device).manual_seed(self.seed + epoch))
        for i in range(start, len(self)):
            index = order[i * self.batch_size : (i + 1) * self.batch_size]
            images = self.images[index].float().div_(255.0)
            if self.binarize or self.shift:
                # Per batch, from (seed, epoch, batch): a resumed epoch redraws the same.
                generator = torch.Generator(device=self.device)
                generator.manual_seed(item_seed(self.seed, epoch, i))
                if self.binarize:
                    images = torch.bernoulli(images, generator=generator)
                if self.shift:
                    images = random_shift(images, self.shift, generator)
            yield images.expand(-1, self.channels, -1, -1), self.labels[index]

    # Lightning checkpoints a loader with these two methods (see genlab.data.loader).
    def mark_trained(self, batches: int) -> None:
        self.batches_trained = batches

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.pass_epoch, "batches": self.batches_trained}

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, batches = resume_position(state, len(self))
        self.sampler.set_epoch(epoch)
        self.start = self.batches_trained = batches

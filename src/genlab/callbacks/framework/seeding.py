"""Every DDP rank draws its own noise.

All ranks are seeded alike (``seed_everything``); without this, they would draw the same
latents and extra GPUs would not enlarge the fake batch. Rank r continues from seed
``initial_seed() + r`` when training starts (after a resumed run's RNG states are restored).
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback


def rank_seed(world_size: int, rank: int) -> int | None:
    """The seed rank ``rank`` reseeds with, or None on a single process (nothing to do)."""
    return torch.initial_seed() + rank if world_size > 1 else None


class PerRankSeed(Callback):
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seed = rank_seed(trainer.world_size, trainer.global_rank)
        if seed is not None:
            torch.manual_seed(seed)

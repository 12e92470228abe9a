"""Count the training batches of the current epoch, through Lightning's public callback hooks.

The resumable loaders (``genlab.resume.loader``, ``genlab.data.device_batches``) run a batch
ahead of training, so they cannot know on their own how many batches a checkpoint has seen.
This callback tells them after every finished batch (``mark_trained``); their ``state_dict``
then records the exact position, and a resumed run skips exactly those batches.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from genlab.resume.loader import EPOCH_DONE


class BatchProgress(Callback):
    def __init__(self) -> None:
        self.batches = 0  # finished training batches of the current epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.batches = 0

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:  # fmt: skip
        # batch_idx continues from the checkpoint in a resumed epoch, so +1 is the count.
        self.batches = batch_idx + 1
        done = self.batches >= trainer.num_training_batches  # limit_train_batches included
        mark = getattr(trainer.train_dataloader, "mark_trained", None)
        if mark is not None:  # a plain DataLoader (DDP) resumes from epoch ends only
            mark(EPOCH_DONE if done else self.batches)

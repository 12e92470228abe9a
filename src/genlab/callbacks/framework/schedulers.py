"""Manual optimisation steps its LR schedulers once per epoch.

Under automatic optimisation Lightning steps the schedulers ``configure_optimizers`` returns;
under manual optimisation it does not, so this callback does, at the end of every training
epoch (per-step schedules such as OneCycleLR do not fit here). A ``ReduceLROnPlateau`` steps on
the model's ``monitor``; in an epoch without validation it has nothing to react to and waits.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback


class EpochSchedulers(Callback):
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if pl_module.automatic_optimization:  # Lightning steps them itself
            return
        schedulers = pl_module.lr_schedulers()
        if schedulers is None:
            return
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                monitor = getattr(pl_module, "monitor", None)
                value = trainer.callback_metrics.get(monitor) if monitor else None
                if value is not None:
                    scheduler.step(value)
            else:
                scheduler.step()

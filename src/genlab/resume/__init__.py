"""Exact resume: a stopped run continues as if it had never stopped, bit for bit on CPU.

    python train.py resume=outputs/train/runs/<time>      # after a crash, SIGTERM or Ctrl-C
    python train.py checkpoint_every_n_batches=200        # last.ckpt inside long epochs too

The pieces, each in its own file of this package:

- ``loader``: the training loader and samplers whose order and augmentation are functions of
  (seed, epoch, position), with a checkpointable position;
- ``progress``: counts finished training batches (a callback) and tells the loader;
- ``rng``: the global RNG states in every checkpoint;
- ``interrupt``: SIGTERM / Ctrl-C write ``last.ckpt`` after the batch in flight;
- ``stored_config``: the run's config in every checkpoint (the W&B run id: ``genlab.loggers``);
- ``checkpoint``: atomic checkpoint writes, reading checkpoints back;
- ``command``: ``resume=<run dir>``, the stored config plus the command's overrides.

``train.py`` installs ``resume_callbacks`` in every run, whatever ``callbacks=`` says: exactness
never depends on a config group. Only public Lightning hooks are used.
"""

from __future__ import annotations

from pathlib import Path

from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from genlab.resume.interrupt import CheckpointOnInterrupt
from genlab.resume.progress import BatchProgress
from genlab.resume.rng import RNGStates
from genlab.resume.stored_config import StoreConfigInCheckpoint


def resume_callbacks(
    checkpoint_dir: str | Path,
    config: dict,
    every_n_batches: int | None = None,
    config_file_sha256: str | None = None,
) -> list[Callback]:
    """The callbacks a run needs to be resumed exactly from ``checkpoint_dir/last.ckpt``."""
    progress = BatchProgress()
    return [
        progress,
        RNGStates(),
        StoreConfigInCheckpoint(config, config_file_sha256),
        CheckpointOnInterrupt(checkpoint_dir, progress, every_n_batches=every_n_batches),
        # last.ckpt after every epoch. A callback of its own: Lightning >= 2.5 writes a
        # monitoring ModelCheckpoint's save_last only in epochs where the monitor improved.
        ModelCheckpoint(
            dirpath=checkpoint_dir,
            filename="last",
            monitor=None,
            save_top_k=1,
            enable_version_counter=False,
        ),
    ]

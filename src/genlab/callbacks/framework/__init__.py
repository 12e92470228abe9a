"""Framework behaviour a model must not be able to lose, as callbacks ``train`` installs.

Each piece used to live in a Lightning hook of ``GenerativeModel``; a subclass overriding that
hook without ``super()`` lost it silently. As callbacks they run whatever a model overrides, and
a plain LightningModule gets them too. One concept per file:

- ``schedulers``: manual optimisation steps its LR schedulers once per epoch;
- ``seeding``: every DDP rank draws its own noise;
- ``speed``: ``compile`` / ``channels_last`` on each net;
- ``latest_metrics``: what ``log_latest`` kept is logged on every logging step and saved in
  checkpoints;
- ``clipping``: gradient clipping at ``gradient_clip_val``, after the fp16 scaler unscales;
- ``stop``: a stop request (a spent privacy budget, a last time mark) ends the epoch before the
  next batch runs, even while ``trainer.min_epochs`` is not met.

What they read is declared by the model as attributes (``GenerativeModel`` sets them from its
constructor; a plain LightningModule may set them itself, each is optional):

- ``gradient_clip_val: float | None`` (manual optimisation; automatic optimisation uses
  ``trainer.gradient_clip_val``);
- ``compile_nets: bool``, ``channels_last: bool`` and ``compilable(net) -> bool``;
- ``monitor: str``, the metric a ``ReduceLROnPlateau`` scheduler reacts to;
- ``latest_metrics: dict[str, Tensor]``, filled by ``GenerativeModel.log_latest``.

``genlab.train`` installs ``framework_callbacks()`` in every run, whatever ``callbacks=`` says;
a script or test that builds its own ``pl.Trainer`` passes them too.
"""

from __future__ import annotations

from pytorch_lightning.callbacks import Callback

from genlab.callbacks.framework.clipping import GradientClipping
from genlab.callbacks.framework.latest_metrics import LatestMetrics
from genlab.callbacks.framework.schedulers import EpochSchedulers
from genlab.callbacks.framework.seeding import PerRankSeed
from genlab.callbacks.framework.speed import SpeedOptions, configure_nets
from genlab.callbacks.framework.stop import StopBeforeBatch

__all__ = [
    "EpochSchedulers",
    "GradientClipping",
    "LatestMetrics",
    "PerRankSeed",
    "SpeedOptions",
    "StopBeforeBatch",
    "configure_nets",
    "framework_callbacks",
]


def framework_callbacks() -> list[Callback]:
    """The framework behaviour every run gets, in the order the hooks ran on the model."""
    return [
        SpeedOptions(),
        PerRankSeed(),
        StopBeforeBatch(),
        LatestMetrics(),
        GradientClipping(),
        EpochSchedulers(),
    ]

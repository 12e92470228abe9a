"""``compile`` and ``channels_last`` on each net of a model, before Lightning moves it.

They act on each child net (G, D, encoder, ...), never on the LightningModule:
``toggle_optimizer`` flips ``requires_grad`` on the module's parameters twice per step, which
would invalidate a graph of the whole training step. In-place ``nn.Module.compile`` keeps the
state-dict keys, so checkpoints load either way. The model declares ``channels_last``,
``compile_nets`` and optionally ``compilable(net)``; its nets exist once it is constructed.
"""

from __future__ import annotations

import weakref

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

# Models whose nets are configured. Lightning runs setup for every stage (fit, then test on the
# best checkpoint) and a model may meet several trainers: compiling twice would recompile.
_configured: weakref.WeakSet[torch.nn.Module] = weakref.WeakSet()


def configure_nets(model: torch.nn.Module) -> None:
    """Apply the model's ``channels_last`` / ``compile_nets`` to each of its nets, once."""
    if model in _configured:
        return
    _configured.add(model)
    channels_last = getattr(model, "channels_last", False)
    compile_nets = getattr(model, "compile_nets", False)
    compilable = getattr(model, "compilable", lambda net: True)
    for net in model.children():
        if channels_last:  # NHWC: faster convolutions on tensor cores and oneDNN.
            # Batches need no conversion: a conv with NHWC weights returns NHWC outputs.
            net.to(memory_format=torch.channels_last)
        if compile_nets and compilable(net):
            net.compile()


class SpeedOptions(Callback):
    """Where the model's ``configure_model`` hook ran it: after ``setup``, before the strategy
    moves the model to its device (which keeps the memory format)."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        configure_nets(pl_module)

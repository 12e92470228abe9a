"""Stop a diverging run early, saying where to resume from.

    python train.py callbacks.divergence_guard.max_grad_norm=1e3

Before every optimizer step the guard measures the gradient norm of that optimizer's
parameters; above ``max_grad_norm`` (or NaN/Inf) it stops training with the step, the norm,
the latest logged losses and the last checkpoint written. (A NaN/Inf *loss* is caught earlier,
by the model's ``check_finite``, with the same advice.)
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from genlab.checkpoints.load import last_good_checkpoint
from genlab.errors import DivergenceError


class DivergenceGuard(Callback):
    def __init__(self, max_grad_norm: float = 1e4) -> None:
        self.max_grad_norm = max_grad_norm

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer
    ) -> None:
        grads = [
            p.grad
            for group in optimizer.param_groups
            for p in group["params"]
            if p.grad is not None
        ]
        if not grads:
            return
        # One fused kernel per device instead of a norm per tensor: this runs every step.
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        if torch.isfinite(norm) and norm <= self.max_grad_norm:
            return
        if not torch.isfinite(norm) and getattr(trainer.precision_plugin, "scaler", None):
            # 16-mixed: the GradScaler skips this step and lowers its scale; that is how it
            # calibrates, not a divergence (a NaN *loss* is still caught by the model).
            return
        losses = {k: round(float(v), 4) for k, v in trainer.callback_metrics.items()
                  if k.startswith("train/")}  # fmt: skip
        raise DivergenceError(
            f"gradient norm {float(norm):.4g} > callbacks.divergence_guard.max_grad_norm="
            f"{self.max_grad_norm:g} at global step {trainer.global_step} (epoch "
            f"{trainer.current_epoch}); last logged {losses}. Training diverged: lower the "
            f"learning rate, set model.gradient_clip_val=1.0, or resume from the last good "
            f"checkpoint: ckpt_path={_quoted(last_good_checkpoint(trainer))}"
        )


def _quoted(path: str) -> str:
    """A checkpoint path as one shell word (run folders may hold spaces); the placeholder text
    for "none yet" as it is."""
    return shlex.quote(path) if Path(path).is_file() else path

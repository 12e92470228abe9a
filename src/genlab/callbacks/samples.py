"""Sample grids from fixed noise, written as PNGs and sent to every image-capable logger."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from torchvision.utils import make_grid, save_image

from genlab.errors import ConfigError
from genlab.loggers.adapters import adapter
from genlab.utils.atomic import atomic_path


class SampleGrid(pl.Callback):
    """Every ``every_n_epochs`` epochs, save ``n`` samples from the same latents as one grid.

    Fixed latents (``seed``) make successive grids comparable: the same cell shows how one z
    evolves. Models with ``reconstruct`` (VAEs) also get a grid of validation images (odd rows)
    above their reconstructions (even rows). Files: ``<dirpath>/samples_epoch=007.png``,
    ``recon_epoch=007.png`` and ``samples_last.png``.
    """

    def __init__(self, dirpath: str, n: int = 64, every_n_epochs: int = 1, seed: int = 0) -> None:
        if n < 1 or every_n_epochs < 1:
            raise ConfigError(
                f"sample_grid: n={n} and every_n_epochs={every_n_epochs} must both be >= 1 "
                "(switch the callback off with callbacks.sample_grid=null)."
            )
        self.dirpath = Path(dirpath)
        self.n, self.every_n_epochs, self.seed = n, every_n_epochs, seed
        self.nrow = max(1, int(n**0.5))
        self._real: torch.Tensor | None = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        if (epoch + 1) % self.every_n_epochs and epoch + 1 != trainer.max_epochs:
            return
        was_training = pl_module.training
        pl_module.eval()
        try:
            samples = pl_module.sample(self.n, generator=torch.Generator().manual_seed(self.seed))
            self._emit(trainer, "samples", samples, epoch)
            recon = self._reconstructions(trainer, pl_module)
            if recon is not None:
                self._emit(trainer, "reconstructions", recon, epoch)
        finally:
            pl_module.train(was_training)

    def _reconstructions(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> torch.Tensor | None:
        if not hasattr(pl_module, "reconstruct") or trainer.datamodule is None:
            return None
        if self._real is None:  # the same validation images every time, like the fixed noise
            batch = next(iter(trainer.datamodule.val_dataloader()))
            # Whole rows only, so each row of originals sits above its reconstructions.
            self._real = batch[0][: self.nrow * max(1, self.n // (2 * self.nrow))]
        # The loader gives float32; the model may be float64 or half (trainer.precision=64,
        # bf16-true): Lightning casts the batches of its own steps, this call is not one of them.
        real = self._real.to(device=pl_module.device, dtype=pl_module.dtype)
        recon = pl_module.reconstruct(real).float().cpu()
        # Interleave rows: a row of originals, then the same images reconstructed.
        rows = [t.split(self.nrow) for t in (self._real, recon)]
        return torch.cat([torch.cat(pair) for pair in zip(*rows, strict=True)])

    def _emit(self, trainer: pl.Trainer, name: str, images: torch.Tensor, epoch: int) -> None:
        grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=self.nrow, padding=2)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        short = "samples" if name == "samples" else "recon"
        for path in (
            self.dirpath / f"{short}_epoch={epoch:03d}.png",
            self.dirpath / f"{short}_last.png",
        ):
            with atomic_path(path) as tmp:
                save_image(grid, tmp)
        for logger in trainer.loggers:  # each as it can: W&B and TensorBoard show images
            adapter(logger).log_images(name, grid, f"epoch {epoch}", trainer.global_step)

"""Sample grids from fixed noise, written as PNGs and sent to every image-capable logger."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from torchvision.utils import make_grid, save_image

from genlab.errors import ConfigError
from genlab.loggers.adapters import adapter
from genlab.metrics.sampling import num_classes
from genlab.utils.atomic import atomic_path


class SampleGrid(pl.Callback):
    """Every ``every_n_epochs`` epochs, save ``n`` samples from the same latents as one grid.

    Fixed latents (``seed``) make successive grids comparable: the same cell shows how one z
    evolves. Models with ``reconstruct`` (VAEs) also get a grid of validation images (odd rows)
    above their reconstructions (even rows). Files: ``<dirpath>/samples_epoch=007.png``,
    ``recon_epoch=007.png`` and ``samples_last.png``.

    A conditional model (``num_classes`` > 0) gets one row per class, ``n // num_classes``
    columns (at least one): every row is asked for ``sample(columns, generator, labels)`` from
    the same seed, so a column shows one z across the classes. Its reconstructions are given
    each validation image's label (``batch[1]``). Logged images are captioned with the rows'
    classes (the data module's ``class_names``, else the class indices).
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
        self._labels: torch.Tensor | None = None  # the originals' classes (conditional)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        if (epoch + 1) % self.every_n_epochs and epoch + 1 != trainer.max_epochs:
            return
        was_training = pl_module.training
        pl_module.eval()
        try:
            classes = num_classes(pl_module)
            if classes:
                rows = ", ".join(class_names(trainer.datamodule, classes))
                samples = self._class_rows(pl_module, classes)
                self._emit(
                    trainer, "samples", samples, epoch, self.columns(classes),
                    f"epoch {epoch} — rows: {rows}",
                )  # fmt: skip
            else:
                samples = self._seeded(pl_module, self.n)
                self._emit(trainer, "samples", samples, epoch, self.nrow, f"epoch {epoch}")
            recon = self._reconstructions(trainer, pl_module)
            if recon is not None:
                images, labels = recon
                caption = f"epoch {epoch}"
                if labels is not None:  # the classes of the originals, pair of rows by pair
                    names = class_names(trainer.datamodule, classes)
                    pairs = [", ".join(names[i] for i in row) for row in labels.split(self.nrow)]
                    caption += " — classes: " + " | ".join(pairs)
                self._emit(trainer, "reconstructions", images, epoch, self.nrow, caption)
        finally:
            pl_module.train(was_training)

    def columns(self, classes: int) -> int:
        """The columns of a conditional model's grid: ``n`` images in whole rows of a class."""
        return max(1, self.n // classes)

    def _seeded(
        self, pl_module: pl.LightningModule, n: int, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        if labels is None:  # an unconditional model: sample(n, generator) as ever
            return pl_module.sample(n, generator=generator)
        return pl_module.sample(n, generator=generator, labels=labels)

    def _class_rows(self, pl_module: pl.LightningModule, classes: int) -> torch.Tensor:
        """Row c: ``columns`` samples of class c from the same seed (the same latents)."""
        columns = self.columns(classes)
        rows = [
            self._seeded(pl_module, columns, torch.full((columns,), c, dtype=torch.long))
            for c in range(classes)
        ]
        return torch.cat(rows)

    def _reconstructions(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """Originals and reconstructions in alternating rows, and (a conditional model) the
        originals' labels, row-major; None for a model without ``reconstruct`` or data."""
        if not hasattr(pl_module, "reconstruct") or trainer.datamodule is None:
            return None
        conditional = num_classes(pl_module) > 0
        if self._real is None:  # the same validation images every time, like the fixed noise
            batch = next(iter(trainer.datamodule.val_dataloader()))
            # Whole rows only, so each row of originals sits above its reconstructions.
            keep = self.nrow * max(1, self.n // (2 * self.nrow))
            self._real = batch[0][:keep]
            self._labels = batch[1][:keep].long() if conditional else None
        # The loader gives float32; the model may be float64 or half (trainer.precision=64,
        # bf16-true): Lightning casts the batches of its own steps, this call is not one of them.
        real = self._real.to(device=pl_module.device, dtype=pl_module.dtype)
        if self._labels is None:
            recon = pl_module.reconstruct(real)
        else:
            recon = pl_module.reconstruct(real, self._labels.to(pl_module.device))
        # Interleave rows: a row of originals, then the same images reconstructed.
        rows = [t.split(self.nrow) for t in (self._real, recon.float().cpu())]
        images = torch.cat([torch.cat(pair) for pair in zip(*rows, strict=True)])
        return images, self._labels

    def _emit(
        self,
        trainer: pl.Trainer,
        name: str,
        images: torch.Tensor,
        epoch: int,
        nrow: int,
        caption: str,
    ) -> None:
        grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=2)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        short = "samples" if name == "samples" else "recon"
        for path in (
            self.dirpath / f"{short}_epoch={epoch:03d}.png",
            self.dirpath / f"{short}_last.png",
        ):
            with atomic_path(path) as tmp:
                save_image(grid, tmp)
        for logger in trainer.loggers:  # each as it can: W&B and TensorBoard show images
            adapter(logger).log_images(name, grid, caption, trainer.global_step)


def class_names(datamodule: object | None, classes: int) -> list[str]:
    """The names of classes ``0 .. classes - 1``: the data module's ``class_names`` where it
    has one name per class, else the class indices."""
    names = getattr(datamodule, "class_names", None)
    if names is not None and len(names) == classes:
        return [str(name) for name in names]
    return [str(c) for c in range(classes)]

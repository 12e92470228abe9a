"""The training sample grids (callbacks/samples.py SampleGrid): a conditional model gets one row
per class (a column is one latent) and labelled reconstructions, its logged images are
captioned with the rows' classes; an unconditional model's grids are exactly as before."""

from __future__ import annotations

import functools
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from torchvision.utils import make_grid, save_image

from genlab.callbacks.samples import SampleGrid, class_names
from genlab.models.gan import GAN
from genlab.models.vae import VAE
from genlab.nets.conv import ConvDecoder, ConvEncoder

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
ADAM = functools.partial(torch.optim.Adam, lr=1e-3)


def _gan(classes: int = 0) -> GAN:
    torch.manual_seed(0)
    return GAN(
        generator=ConvDecoder(latent_dim=8, width=8, num_classes=classes),
        discriminator=ConvEncoder(width=8, num_classes=classes),
        optimizer=ADAM, latent_dim=8, num_classes=classes,
    )  # fmt: skip


def _vae(classes: int = 0) -> VAE:
    torch.manual_seed(0)
    label_input = "channels" if classes else None
    encoder = ConvEncoder(out_features=16, width=8, num_classes=classes, label_input=label_input)
    return VAE(
        encoder=encoder,
        decoder=ConvDecoder(latent_dim=8, width=8, num_classes=classes, out_activation=None),
        optimizer=ADAM, latent_dim=8, num_classes=classes,
    )  # fmt: skip


class RecordingWandb(WandbLogger):
    """W&B to genlab's adapters, recording what would be uploaded."""

    def __init__(self) -> None:  # no W&B run: nothing here talks to W&B
        self.logged: list[dict[str, Any]] = []

    def log_image(self, key: str, images: list, step: int | None = None, **kwargs: Any) -> None:
        self.logged.append({"key": key, "images": images, **kwargs})


class RecordingTensorBoard(TensorBoardLogger):
    def __init__(self) -> None:
        self.images: list[tuple] = []
        self.texts: list[tuple] = []

    @property
    def experiment(self) -> Any:
        return SimpleNamespace(
            add_image=lambda key, grid, global_step: self.images.append((key, global_step)),
            add_text=lambda key, text, global_step: self.texts.append((key, text, global_step)),
        )


class Data:
    """A data module's validation batch of 40 labelled images (and, optionally, class names)."""

    def __init__(self, names: list[str] | None = None) -> None:
        g = torch.Generator().manual_seed(1)
        self.batch = (torch.rand(40, 1, 28, 28, generator=g), torch.arange(40) % 10)
        if names is not None:
            self.class_names = names

    def val_dataloader(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [self.batch]


def _end_epoch(grid: SampleGrid, model: Any, datamodule: Any = None, epoch: int = 2) -> Any:
    trainer = SimpleNamespace(
        current_epoch=epoch, sanity_checking=False, is_global_zero=True, max_epochs=10,
        datamodule=datamodule, loggers=[RecordingWandb(), RecordingTensorBoard()], global_step=7,
    )  # fmt: skip
    model.train()
    grid.on_train_epoch_end(trainer, model)  # type: ignore[arg-type]
    assert model.training  # given back in training mode
    return trainer


def _png(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path)))


def _same_png(path: Path, images: torch.Tensor, nrow: int, tmp_path: Path) -> None:
    """``path`` holds exactly the grid of ``images`` the callback always wrote."""
    expected = tmp_path / "expected.png"
    save_image(make_grid(images.float().clamp(0, 1), nrow=nrow, padding=2), expected)
    assert torch.equal(_png(path), _png(expected))


def test_a_conditional_gan_gets_one_row_per_class(tmp_path: Path) -> None:
    model = _gan(classes=10)
    grid = SampleGrid(str(tmp_path / "samples"), n=64, seed=3)
    trainer = _end_epoch(grid, model, Data(NAMES))
    png = _png(tmp_path / "samples" / "samples_epoch=002.png")
    columns = 64 // 10
    assert png.shape[:2] == (10 * 30 + 2, columns * 30 + 2)  # 10 rows of 6 images of 28 + 2
    # Row c: class c; column j: the same latent z_j in every row.
    model.eval()
    z = model.noise(columns, torch.Generator().manual_seed(3))
    with torch.no_grad():
        rows = [model.generate(z, torch.full((columns,), c)) for c in range(10)]
    _same_png(tmp_path / "samples" / "samples_epoch=002.png", torch.cat(rows), columns, tmp_path)
    assert not torch.allclose(rows[0], rows[1], atol=1e-4)  # the class changes the images
    wandb, tensorboard = trainer.loggers
    rows_caption = "epoch 2 — rows: " + ", ".join(NAMES)
    assert [(x["key"], x["caption"]) for x in wandb.logged] == [("samples", [rows_caption])]
    assert tensorboard.images == [("samples", 7)]
    assert tensorboard.texts == [("samples/caption", rows_caption, 7)]


def test_class_names_fall_back_to_the_indices(tmp_path: Path) -> None:
    assert class_names(None, 3) == ["0", "1", "2"]
    assert class_names(Data(), 3) == ["0", "1", "2"]  # a data module without class_names
    assert class_names(Data(["cat", "dog"]), 2) == ["cat", "dog"]
    assert class_names(Data(["cat", "dog"]), 3) == ["0", "1", "2"]  # not one name per class
    model = _gan(classes=3)
    trainer = _end_epoch(SampleGrid(str(tmp_path), n=9), model, None, epoch=0)  # no data module
    wandb, _ = trainer.loggers
    assert wandb.logged[0]["caption"] == ["epoch 0 — rows: 0, 1, 2"]


def test_a_conditional_vae_reconstructs_with_each_images_label(tmp_path: Path) -> None:
    model = _vae(classes=10)
    seen: list[torch.Tensor] = []
    reconstruct = model.reconstruct

    def recording(x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        seen.append(labels)
        return reconstruct(x, labels)

    model.reconstruct = recording  # type: ignore[method-assign]
    data = Data(NAMES)
    trainer = _end_epoch(SampleGrid(str(tmp_path), n=64), model, data)
    real, labels = data.batch[0][:32], data.batch[1][:32]  # 4 rows of 8 originals
    assert len(seen) == 1 and torch.equal(seen[0], labels)
    model.eval()
    with torch.no_grad():
        recon = reconstruct(real, labels)
    pairs = zip(real.split(8), recon.split(8), strict=True)
    _same_png(
        tmp_path / "recon_epoch=002.png", torch.cat([torch.cat(p) for p in pairs]), 8, tmp_path
    )
    wandb, _ = trainer.loggers
    caption = wandb.logged[1]["caption"][0]
    assert wandb.logged[1]["key"] == "reconstructions"
    first_row = ", ".join(NAMES[int(c)] for c in labels[:8])
    assert caption.startswith(f"epoch 2 — classes: {first_row} | ")
    assert caption.count("|") == 3  # 4 rows of originals
    assert _png(tmp_path / "samples_last.png").shape[0] == 10 * 30 + 2  # samples: class rows


@pytest.mark.parametrize("make", [_gan, _vae])
def test_unconditional_grids_are_unchanged(make: Any, tmp_path: Path) -> None:
    model = make()
    data = Data()
    trainer = _end_epoch(SampleGrid(str(tmp_path), n=64, seed=5), model, data)
    model.eval()
    samples = model.sample(64, generator=torch.Generator().manual_seed(5))
    _same_png(tmp_path / "samples_epoch=002.png", samples, 8, tmp_path)
    _same_png(tmp_path / "samples_last.png", samples, 8, tmp_path)
    wandb, tensorboard = trainer.loggers
    assert wandb.logged[0]["caption"] == ["epoch 2"]
    assert tensorboard.texts[0] == ("samples/caption", "epoch 2", 7)
    if make is _vae:
        real = data.batch[0][:32]
        with torch.no_grad():
            recon = model.reconstruct(real)
        pairs = zip(real.split(8), recon.split(8), strict=True)
        images = torch.cat([torch.cat(p) for p in pairs])
        _same_png(tmp_path / "recon_epoch=002.png", images, 8, tmp_path)
        assert wandb.logged[1]["caption"] == ["epoch 2"]
    else:
        assert not (tmp_path / "recon_epoch=002.png").exists() and len(wandb.logged) == 1

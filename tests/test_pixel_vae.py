"""The PixelVAE decoder (genlab/nets/pixelcnn.py) and the VAE's autoregressive hook: each pixel
sees only the pixels before it, drawing agrees with scoring, and experiment=pixel_vae_mnist
composes, trains and samples seeded images."""

from __future__ import annotations

from functools import partial

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from genlab.data.mnist import MNISTDataModule
from genlab.errors import ConfigError
from genlab.metrics.sampling import draw
from genlab.models.vae import VAE
from genlab.nets.conv import ConvEncoder
from genlab.nets.pixelcnn import PixelCNNDecoder
from tests.conftest import CONF, SHIPPED
from tests.test_models import fit


@pytest.mark.parametrize("channels", [1, 3])
def test_each_pixel_sees_only_the_pixels_before_it(channels: int) -> None:
    torch.manual_seed(0)
    net = PixelCNNDecoder(latent_dim=4, channels=channels, width=8, kernel=5, layers=2).eval()
    z, x = torch.randn(1, 4), torch.bernoulli(torch.full((1, channels, 28, 28), 0.5))
    with torch.no_grad():
        base = net(z, x)
        # (channel, row, column) flipped -> how many pixels' logits change: the 5x5 window's
        # 12 positions after the centre, fewer at the image's edges.
        for (c, i, j), count in {(0, 0, 0): 8, (channels - 1, 5, 7): 12, (0, 12, 27): 6,
                                 (0, 27, 27): 0}.items():  # fmt: skip
            flipped = x.clone()
            flipped[0, c, i, j] = 1 - flipped[0, c, i, j]
            changed = (net(z, flipped) != base).any(dim=1)[0].nonzero().tolist()
            assert all(a > i or (a == i and b > j) for a, b in changed), (c, i, j)
            assert len(changed) == count, (c, i, j)


def test_drawn_images_score_as_they_were_drawn() -> None:
    """``sample`` computes each pixel's probability one position at a time; teacher forcing on
    the drawn images must give the same probabilities (so the masks and the incremental path
    agree)."""
    torch.manual_seed(0)
    net = PixelCNNDecoder(latent_dim=4, width=8, hidden=8, kernel=7).eval()
    z = torch.randn(3, 4)
    images, probs = net.sample(z, torch.rand(3, 1, 28, 28))
    assert set(images.unique().tolist()) <= {0.0, 1.0}
    with torch.no_grad():
        torch.testing.assert_close(torch.sigmoid(net(z, images)), probs, rtol=0, atol=1e-6)


def _model(experiment: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"experiment={experiment}"])
    return instantiate(cfg.model)


def test_pixel_vae_mnist_trains_and_samples() -> None:
    """The recipe composes; 40 batches take its bound well below an untrained plain VAE's, and
    its samples are seeded images in [0, 1] whatever the batch size."""
    dm = MNISTDataModule(data_dir=str(SHIPPED), train_fraction=0.03, binarize=True)
    dm.setup("fit")
    digits = torch.bernoulli(
        dm.train_set.images.float() / 255, generator=torch.Generator().manual_seed(0)
    )
    train, held_out = digits[:-128], digits[-128:]

    def nll(model) -> float:
        model.eval()
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(1)
            return float(-model.iwae_bound(held_out, k=5).mean())

    pl.seed_everything(0)
    plain = nll(_model("vae_mnist"))
    model = _model("pixel_vae_mnist")
    assert model.autoregressive
    fit(model, train[: 40 * 32], epochs=1)  # 40 batches
    after = nll(model)
    assert after == after and after < plain - 200, (
        f"plain VAE at init {plain:.1f}, after {after:.1f}"
    )

    a = draw(model, 6, seed=1, batch_size=4)
    assert a.shape == (6, 1, 28, 28) and a.min() >= 0 and a.max() <= 1
    torch.testing.assert_close(a, draw(model, 6, seed=1, batch_size=4), rtol=0, atol=0)
    # Another batch size: the same draws (conv arithmetic may differ in the last bit).
    torch.testing.assert_close(a, draw(model, 6, seed=1, batch_size=6), rtol=0, atol=1e-5)
    assert not torch.equal(a, draw(model, 6, seed=2, batch_size=6))


def _vae(**kwargs) -> VAE:
    return VAE(
        encoder=ConvEncoder(out_features=8, width=8),
        decoder=PixelCNNDecoder(latent_dim=4, width=8),
        optimizer=partial(torch.optim.Adam),
        latent_dim=4,
        **kwargs,
    )


def test_autoregressive_decoder_refuses_what_it_cannot_do() -> None:
    with pytest.raises(ConfigError, match="likelihood='gaussian' with an autoregressive"):
        _vae(likelihood="gaussian")
    with pytest.raises(ConfigError, match=r"model\.decoder=PixelCNNDecoder does not combine"):
        _vae().check_private_training()

from __future__ import annotations

import pytest
import torch

from genlab.nets.conv import ConvDecoder, ConvEncoder


@pytest.mark.parametrize("size", [28, 32, 64])
def test_decoder_encoder_shapes(size: int) -> None:
    g = ConvDecoder(latent_dim=8, channels=3, image_size=size, width=8)
    d = ConvEncoder(out_features=5, channels=3, image_size=size, width=8)
    x = g(torch.randn(4, 8))
    assert x.shape == (4, 3, size, size) and x.abs().max() <= 1  # tanh
    assert d(x).shape == (4, 5)


def test_unsupported_size_is_explained() -> None:
    with pytest.raises(ValueError, match="image_size=30 is not supported"):
        ConvDecoder(image_size=30)


@pytest.mark.parametrize("upsample", ["transposed", "nearest"])
def test_deeper_stages_keep_shapes_and_add_convs(upsample: str) -> None:
    plain = ConvDecoder(latent_dim=8, width=8, upsample=upsample)
    deep = ConvDecoder(latent_dim=8, width=8, upsample=upsample, convs_per_stage=3)
    assert deep(torch.randn(2, 8)).shape == (2, 1, 28, 28)
    convs = [sum(isinstance(m, torch.nn.Conv2d) for m in net.modules()) for net in (plain, deep)]
    assert convs[1] - convs[0] == 2 * 2  # two extra 3x3 convs at each of 7x7 and 14x14
    d = ConvEncoder(width=8, convs_per_stage=2)
    assert d(torch.rand(2, 1, 28, 28)).shape == (2, 1)
    with pytest.raises(ValueError, match="upsample='bilinear'"):
        ConvDecoder(upsample="bilinear")


def test_minibatch_std_lets_d_see_a_collapsed_batch() -> None:
    """The appended channel is the batch's spread: zero for identical images, positive else."""
    d = ConvEncoder(width=8, norm="none", minibatch_std=True)
    stats = d.net[:-2]  # up to and including MinibatchStd
    same = stats(torch.rand(1, 1, 28, 28).expand(8, -1, -1, -1).contiguous())[:, -1]
    varied = stats(torch.rand(8, 1, 28, 28))[:, -1]
    assert same.max() < 1e-3 < varied.min()
    assert d(torch.rand(5, 1, 28, 28)).shape == (5, 1)  # a ragged batch: one group

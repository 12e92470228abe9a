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

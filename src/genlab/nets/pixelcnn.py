"""An autoregressive VAE decoder: a conv decoder's features and a small PixelCNN head.

In the spirit of PixelVAE (Gulrajani et al., 2017): ``ConvDecoder`` maps the latent to
``hidden`` feature maps at full resolution, and a PixelCNN head (van den Oord et al., 2016)
turns them, together with the *pixels before each pixel* in raster order, into per-pixel
Bernoulli logits::

    h = relu(features(z) + context(x))    # context: a k x k conv masked to the pixels before
    h = relu(linear(h))  (``layers`` times)  #   the centre (PixelCNN's mask A)
    logits = linear(h)                       # per pixel (1x1), on channels-last maps

Only one layer looks at neighbouring pixels, so the head's context is a small window: the
latent must still carry the digit's shape, and the head models what a factorised decoder
cannot, the way neighbouring pixels of a stroke agree. It also keeps both directions cheap:

* likelihood: one parallel pass (teacher forcing), ``forward(z, x) -> logits``;
* sampling: pixel by pixel, ``sample(z, noise)``, but each step computes the head at one
  position only, so 784 steps cost little more than one pass.

The feature maps are channels-last (NHWC) and the 1x1 layers are ``nn.Linear`` on them: on a
CPU a 1x1 convolution on a few NCHW channels costs several times its arithmetic, and the k=1000
likelihood bound runs the decoder 10 million times on the MNIST test set.

Channels of one pixel are conditionally independent given the pixels before it (the
likelihood factorises over pixels in raster order, and over channels within a pixel).
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from genlab.config.rules import AT_LEAST_ONE, NON_NEGATIVE
from genlab.errors import ConfigError
from genlab.nets.conv import NORM, ConvDecoder


class PixelCNNDecoder(nn.Module):
    """Latent ``[N, latent_dim]`` and images ``[N, C, H, W]`` -> logits ``[N, C, H, W]``, where
    the logit of each pixel depends on the latent and on the pixels before it only.

    ``hidden``: feature maps per pixel; ``kernel``: the size of the masked window (odd, >= 3);
    ``layers``: 1x1 layers after it; ``width``, ``norm``: the ``ConvDecoder`` that maps z to
    the ``hidden`` feature maps.
    """

    # The VAE's hook (models/vae.py): forward takes the images it scores, sample draws them.
    autoregressive = True

    def __init__(
        self,
        latent_dim: Annotated[int, AT_LEAST_ONE] = 32,
        hidden: Annotated[int, AT_LEAST_ONE] = 8,
        kernel: Annotated[int, AT_LEAST_ONE] = 7,
        layers: Annotated[int, NON_NEGATIVE] = 1,
        channels: int = 1,
        image_size: int = 28,
        width: Annotated[int, AT_LEAST_ONE] = 64,
        norm: Annotated[str, NORM] = "batch",
    ) -> None:
        super().__init__()
        if kernel < 3 or kernel % 2 == 0:
            raise ConfigError(f"kernel={kernel}: the masked window needs an odd size >= 3.")
        self.latent_dim = latent_dim
        self.image_shape = (channels, image_size, image_size)
        self.features = ConvDecoder(
            latent_dim=latent_dim,
            channels=hidden,
            image_size=image_size,
            width=width,
            norm=norm,
            out_activation=None,
        ).to(memory_format=torch.channels_last)  # NHWC conv weights -> NHWC feature maps
        self.context = nn.Conv2d(channels, hidden, kernel, padding=kernel // 2)
        # Mask A: the rows above the centre and the pixels left of it in its row.
        mask = torch.zeros(1, 1, kernel, kernel)
        mask[..., : kernel // 2, :] = 1
        mask[..., kernel // 2, : kernel // 2] = 1
        self.register_buffer("mask", mask, persistent=False)
        self.mix = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
        self.out = nn.Linear(hidden, channels)

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        """Pre-activations ``[..., hidden]`` -> logits ``[..., channels]``."""
        h = F.relu(h)
        for layer in self.mix:
            h = F.relu(layer(h))
        return self.out(h)

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: the logits of every pixel of ``x`` given z and the pixels of ``x``
        before it, in one pass."""
        features = self.features(z).permute(0, 2, 3, 1)  # NHWC: a view of channels-last maps
        x = x.contiguous(memory_format=torch.channels_last)
        weight = self.context.weight * self.mask
        context = F.conv2d(x, weight, self.context.bias, padding=self.context.padding)
        return self._head(features + context.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    @torch.no_grad()
    def sample(self, z: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw images pixel by pixel in raster order: pixel = (noise < p), with ``noise``
        uniforms ``[N, C, H, W]``. (Taking each pixel's mode instead, p > 0.5, draws few
        strokes: the first pixel of a stroke is seldom more likely on than off.)

        Returns (the binary images, each pixel's probability p given z and the drawn pixels
        before it), both ``[N, C, H, W]``: ``forward(z, images)`` gives the same p."""
        (channels, height, width), k = self.image_shape, self.context.kernel_size[0]
        r = k // 2
        features = self.features(z).permute(0, 2, 3, 1)  # [N, H, W, hidden]
        weight = self.context.weight * self.mask
        n = len(z)
        xp = features.new_zeros(n, channels, height + 2 * r, width + 2 * r)  # padded images
        probs = features.new_zeros(n, channels, height, width)
        for i in range(height):
            for j in range(width):
                # The window centred on (i, j); the mask hides the centre and what follows.
                context = F.conv2d(xp[:, :, i : i + k, j : j + k], weight, self.context.bias)
                p = torch.sigmoid(self._head(features[:, i, j] + context[:, :, 0, 0]))  # [N, C]
                probs[:, :, i, j] = p
                xp[:, :, i + r, j + r] = (noise[:, :, i, j] < p).to(xp.dtype)
        return xp[:, :, r : r + height, r : r + width].clone(), probs

"""DCGAN-style convolutional encoder and decoder (plain ``nn.Module``s, no Lightning).

One pair of nets serves every model family:

* ``ConvDecoder`` maps a latent vector to an image. With ``out_activation="tanh"`` it is the
  DCGAN generator; with ``out_activation=None`` it is a VAE decoder that returns logits/means.
* ``ConvEncoder`` maps an image to ``out_features`` numbers. With ``out_features=1`` it is the
  DCGAN discriminator (logits out, no sigmoid: losses take logits); with ``2 * latent_dim`` it is
  a VAE encoder.

Both work for square images of size ``s * 2**k`` with ``s`` in {4, 7}: 28 px (MNIST) starts from
7x7, 32/64/128 px from 4x4. Each stage doubles (decoder) or halves (encoder) the resolution.

With ``num_classes`` > 0 both are class-conditional and called as ``net(x, labels)`` (the
model contract's conditional nets, docs/models.md):

* the decoder reads a learned label embedding beside the latent (``embed_dim`` numbers);
* the encoder either adds the label as one-hot image planes to its input
  (``label_input="channels"``: a conditional VAE's recognition net, Sohn et al., 2015) or
  projects it onto its last features (``label_input="projection"``: the projection
  discriminator of Miyato & Koyama, 2018, one logit for "real, and real for this class").
With ``num_classes=0`` (the default) they hold exactly the parameters they always had.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from genlab.config.rules import AT_LEAST_ONE, NON_NEGATIVE, OneOf
from genlab.config.validation import check_rule
from genlab.errors import ConfigError

NORM = OneOf("batch", "layer", "none")
UPSAMPLE = OneOf("transposed", "nearest")
LABEL_INPUT = OneOf("projection", "channels")


def _stages(image_size: int) -> tuple[int, int]:
    """Return (base resolution, number of stride-2 stages) for ``image_size``."""
    for base in (4, 7):
        size, n = image_size, 0
        while size > base and size % 2 == 0:
            size, n = size // 2, n + 1
        if size == base and n >= 1:
            return base, n
    raise ConfigError(
        f"image_size={image_size} is not supported by the conv nets: use 28 or 4*2**k "
        "(8, 16, 32, 64, 128, ...)."
    )


class MinibatchStd(nn.Module):
    """Appends one channel: the mean over features of the standard deviation across the batch
    (Karras et al., 2018). D sees how varied a batch is, so a generator that collapses onto a
    few modes is easy to tell apart: a cheap push towards the data's variety."""

    def __init__(self, group_size: int = 4) -> None:
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n)
        if n % g:  # a ragged last batch: one group over the whole batch
            g = n
        y = x.reshape(g, n // g, c, h, w)
        std = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # [n // g]
        std = std.reshape(1, n // g, 1, 1, 1).expand(g, -1, 1, h, w).reshape(n, 1, h, w)
        return torch.cat([x, std], dim=1)


def _labels(labels: torch.Tensor | None, net: nn.Module) -> torch.Tensor:
    if labels is None:  # a conditional net called like an unconditional one
        raise ConfigError(
            f"{type(net).__name__} has num_classes={net.num_classes} and needs labels: call "
            "net(x, labels), or build it with num_classes=0."
        )
    return labels


def _norm(kind: str, channels: int) -> nn.Module:
    check_rule("norm", kind, NORM)  # a net built in Python; a config's is checked at start-up
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":  # per-sample statistics: what a gradient-penalised critic needs
        return nn.GroupNorm(1, channels)
    return nn.Identity()


def _refine(
    channels: int, extra: int, norm: str, activation: Callable[[], nn.Module]
) -> list[nn.Module]:
    """``extra`` 3x3 convs at one resolution (``convs_per_stage - 1``): depth where strokes are
    drawn or judged, at the stage's width."""
    block: list[nn.Module] = []
    for _ in range(extra):
        block += [
            nn.Conv2d(channels, channels, 3, padding=1, bias=norm == "none"),
            _norm(norm, channels),
            activation(),
        ]
    return block


class ConvDecoder(nn.Module):
    """Latent ``[N, latent_dim]`` -> image ``[N, channels, image_size, image_size]``.

    ``width`` is the channel count of the last hidden stage; earlier stages double it, as in
    DCGAN (Radford et al., 2016).
    """

    def __init__(
        self,
        latent_dim: Annotated[int, AT_LEAST_ONE] = 64,
        channels: int = 1,
        image_size: int = 28,
        width: Annotated[int, AT_LEAST_ONE] = 64,
        norm: Annotated[str, NORM] = "batch",
        out_activation: str | None = "tanh",
        upsample: Annotated[str, UPSAMPLE] = "transposed",
        convs_per_stage: Annotated[int, AT_LEAST_ONE] = 1,
        num_classes: Annotated[int, NON_NEGATIVE] = 0,
        embed_dim: Annotated[int, AT_LEAST_ONE] = 16,
    ) -> None:
        super().__init__()
        base, n = _stages(image_size)
        check_rule("upsample", upsample, UPSAMPLE)
        self.latent_dim, self.num_classes = latent_dim, num_classes
        # A class as a learned vector beside z: the first layer maps both to the 7x7 map.
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes else None
        inputs = latent_dim + (embed_dim if num_classes else 0)
        ch = width * 2 ** (n - 1)
        self.project = nn.Sequential(
            nn.Linear(inputs, ch * base * base, bias=norm == "none"),
            nn.Unflatten(1, (ch, base, base)),
            _norm(norm, ch),
            nn.ReLU(inplace=True),
        )

        def up(c_in: int, c_out: int, bias: bool) -> list[nn.Module]:
            # Nearest-neighbour upsampling + 3x3 conv has no checkerboard artefacts of a
            # stride-2 transposed conv (Odena et al., 2016).
            if upsample == "nearest":
                return [
                    nn.Upsample(scale_factor=2),
                    nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias),
                ]
            return [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=bias)]

        def refine(c: int) -> list[nn.Module]:
            return _refine(c, convs_per_stage - 1, norm, lambda: nn.ReLU(inplace=True))

        layers: list[nn.Module] = refine(ch)
        for _ in range(n - 1):
            layers += [
                *up(ch, ch // 2, norm == "none"),
                _norm(norm, ch // 2),
                nn.ReLU(inplace=True),
            ]
            ch //= 2
            layers += refine(ch)
        layers += up(ch, channels, True)
        if out_activation == "tanh":
            layers.append(nn.Tanh())
        elif out_activation not in (None, "none"):
            raise ConfigError(f"out_activation={out_activation!r}: choose 'tanh' or None.")
        self.upsample = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(_labels(labels, self)).to(z.dtype)], dim=1)
        return self.upsample(self.project(z))


class ConvEncoder(nn.Module):
    """Image ``[N, channels, image_size, image_size]`` -> ``[N, out_features]``."""

    def __init__(
        self,
        out_features: Annotated[int, AT_LEAST_ONE] = 1,
        channels: int = 1,
        image_size: int = 28,
        negative_slope: float = 0.2,
        minibatch_std: bool = False,
        width: Annotated[int, AT_LEAST_ONE] = 64,
        norm: Annotated[str, NORM] = "batch",
        convs_per_stage: Annotated[int, AT_LEAST_ONE] = 1,
        num_classes: Annotated[int, NON_NEGATIVE] = 0,
        label_input: Annotated[str, LABEL_INPUT] = "projection",
    ) -> None:
        super().__init__()
        base, n = _stages(image_size)
        check_rule("label_input", label_input, LABEL_INPUT)
        if num_classes and label_input == "projection" and out_features != 1:
            raise ConfigError(
                f"label_input=projection gives one logit, but out_features={out_features}: use "
                "label_input=channels for an encoder (a conditional VAE's)."
            )
        self.num_classes, self.label_input = num_classes, label_input
        planes = num_classes if num_classes and label_input == "channels" else 0

        def refine(c: int) -> list[nn.Module]:
            activation = lambda: nn.LeakyReLU(negative_slope, inplace=True)  # noqa: E731
            return _refine(c, convs_per_stage - 1, norm, activation)

        layers: list[nn.Module] = [
            # No norm on the first layer (DCGAN): it would normalise away the input statistics.
            nn.Conv2d(channels + planes, width, 4, stride=2, padding=1),
            nn.LeakyReLU(negative_slope, inplace=True),
            *refine(width),
        ]
        ch = width
        for _ in range(n - 1):
            layers += [
                nn.Conv2d(ch, ch * 2, 4, stride=2, padding=1, bias=norm == "none"),
                _norm(norm, ch * 2),
                nn.LeakyReLU(negative_slope, inplace=True),
                *refine(ch * 2),
            ]
            ch *= 2
        if minibatch_std:  # before the last layer, where D judges the whole image
            layers.append(MinibatchStd())
            ch_in = ch + 1
        else:
            ch_in = ch
        self.feature_dim = ch_in * base * base
        layers += [nn.Flatten(), nn.Linear(self.feature_dim, out_features)]
        self.net = nn.Sequential(*layers)
        self.embed = None
        if num_classes and label_input == "projection":
            # One vector per class in feature space, zero at the start: D begins as the
            # unconditional net and learns what each class adds.
            self.embed = nn.Embedding(num_classes, self.feature_dim)
            nn.init.zeros_(self.embed.weight)

    def features(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The flattened activations before the last linear layer (VAE-GAN's similarity, the
        projection's ``h``), ``feature_dim`` wide."""
        if self.num_classes and self.label_input == "channels":
            n, _, h, w = x.shape
            onehot = F.one_hot(_labels(labels, self), self.num_classes).to(x.dtype)
            x = torch.cat([x, onehot[:, :, None, None].expand(n, -1, h, w)], dim=1)
        return self.net[:-1](x)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(x, labels)
        out = self.net[-1](h)
        if self.embed is not None:  # projection: + <embed(y), h>
            out = out + (self.embed(_labels(labels, self)).to(h.dtype) * h).sum(1, keepdim=True)
        return out

"""Feature extractors for sample-quality metrics: images in [0, 1] -> (features, logits).

FID, KID and precision/recall compare *features* of real and generated images; Inception Score
and class coverage read the extractor's *logits*. Two extractors:

- ``mnist_classifier``: a small CNN trained by ``scripts/train_mnist_classifier.py`` on the MNIST
  training set; its weights ship with genlab, so it works offline. Scores computed with it are
  comparable with each other, not with the Inception FIDs printed in papers.
- ``inception``: the standard FID InceptionV3 (torch-fidelity's port of the TF graph), needed for
  numbers comparable with the literature. Its weights are downloaded once, or read from a file.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.errors import CheckpointError, ConfigError, GenlabError
from genlab.utils.hashing import file_sha256

WEIGHTS_DIR = Path(__file__).parent / "weights"
MNIST_CLASSIFIER_WEIGHTS = WEIGHTS_DIR / "mnist_classifier.pt"
INCEPTION_ENV = "GENLAB_INCEPTION_WEIGHTS"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
# What torch.load raises on a damaged file (found by truncating and overwriting bytes of a saved
# file): zip and pickle errors, EOF, short reads, and decoding errors of the pickled records.
LOAD_ERRORS = (
    OSError,
    EOFError,
    RuntimeError,
    ValueError,
    KeyError,
    IndexError,
    pickle.UnpicklingError,
)


def quantize(images: Tensor) -> Tensor:
    """Clamp to [0, 1] and round to 8-bit levels, as real images are: otherwise a generator's
    off-grid values alone would move the scores."""
    return images.clamp(0, 1).mul(255).round().div(255)


def file_digest(path: Path, length: int = 12) -> str:
    return file_sha256(path)[:length]


class FeatureExtractor(nn.Module):
    """Maps images ``[N, C, H, W]`` in [0, 1] to ``(features [N, D], logits [N, K])``.

    ``identity`` names the network *and* its weights; cached real statistics are keyed on it.
    """

    name: str
    identity: str
    num_features: int
    num_classes: int
    # The data set whose classes the logits are (the conditional accuracy reads them as the
    # model's classes, which is only meaningful on that data); None: unknown. Like num_classes,
    # read from the class, before loading.
    classes_of: str | None = None
    # Smallest image side scored. Both nets resize any input, but below 8 px (sklearn's digits
    # and the smallest downsampled ImageNet are 8x8) no shape is left for features to describe,
    # and eval.py would shrink the real images to match. Read from the class, before loading.
    min_image_size: int = 8

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class MNISTClassifier(nn.Module):
    """Small all-conv digit classifier (~140k parameters); ``embed`` is the 128-d feature."""

    num_features, num_classes = 128, 10
    # MNIST training-set pixel mean/std: normalising the input speeds up training.
    mean, std = 0.1307, 0.3081

    def __init__(self) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
            ]

        self.body = nn.Sequential(
            *block(1, 32), *block(32, 32), nn.MaxPool2d(2),  # 14x14
            *block(32, 64), *block(64, 64), nn.MaxPool2d(2),  # 7x7
            *block(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(128, 10))

    def embed(self, x: Tensor) -> Tensor:
        return self.body((x - self.mean) / self.std)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.embed(x))


class MNISTClassifierFeatures(FeatureExtractor):
    """The shipped MNIST classifier as a feature extractor: 128-d features, 10 logits.

    Images of any size or channel count are averaged to grey and resized to 28x28, so
    Fashion-MNIST-sized data can be scored too (the features were learned on digits, though).
    """

    name = "mnist_classifier"
    num_features, num_classes = MNISTClassifier.num_features, MNISTClassifier.num_classes
    classes_of = "mnist"  # the ten digits (scripts/train_mnist_classifier.py trains on MNIST)

    def __init__(self, weights: str | Path | None = None) -> None:
        super().__init__()
        path = Path(weights) if weights else MNIST_CLASSIFIER_WEIGHTS
        if not path.is_file():
            raise ConfigError(
                f"features.weights={str(path)!r} does not exist. Leave it unset to use the "
                f"weights shipped with genlab, or make them with "
                f"`python scripts/train_mnist_classifier.py`."
            )
        self.net = MNISTClassifier()
        saved = _load_classifier(self.net, path, shipped=not weights)  # not a Lightning .ckpt
        self.net.eval().requires_grad_(False)
        self.test_accuracy = float(saved.get("test_accuracy", float("nan")))
        self.identity = f"{self.name}-{file_digest(path)}"

    def train(self, mode: bool = True) -> MNISTClassifierFeatures:
        return super().train(False)  # BatchNorm/Dropout must stay in inference mode

    @torch.no_grad()
    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        x = images.float().mean(dim=1, keepdim=True)
        if x.shape[-2:] != (28, 28):
            x = F.interpolate(x, size=(28, 28), mode="bilinear", antialias=True)
        features = self.net.embed(x)
        return features, self.net.head(features)


def _load_classifier(net: MNISTClassifier, path: Path, shipped: bool) -> dict:
    """Load ``path`` into ``net``; a damaged or foreign file is one line naming it and the fix."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except LOAD_ERRORS as e:
        problem = f"cannot be loaded: {type(e).__name__}"
    else:
        if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
            problem = "no state_dict in it"
        else:
            try:
                net.load_state_dict(checkpoint["state_dict"])
                return checkpoint
            except RuntimeError as e:  # missing or unexpected keys, other shapes
                problem = f"not this classifier's weights: {str(e).splitlines()[0]}"
    if shipped:
        raise CheckpointError(
            f"the shipped classifier weights {path} are damaged ({problem}). Restore the file "
            f"from the genlab repository (src/genlab/metrics/weights/{path.name}) or reinstall "
            f"genlab."
        )
    raise CheckpointError(
        f"features.weights={str(path)!r} is not an MNIST classifier checkpoint ({problem}). Point "
        f"it at a file written by `python scripts/train_mnist_classifier.py`, or leave it unset "
        f"to use the weights shipped with genlab."
    )


def resolve_inception_weights(weights: str | Path | None) -> Path | None:
    """The local weights file to use: the argument, else ``$GENLAB_INCEPTION_WEIGHTS``, else
    torch hub's cache if it already holds them; ``None`` means "download"."""
    chosen = weights or os.environ.get(INCEPTION_ENV)
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"Inception weights file {str(path)!r} does not exist (from "
                f"{'features.weights' if weights else '$' + INCEPTION_ENV}). Download "
                f"{INCEPTION_FILE} from the torch-fidelity releases page and point at it."
            )
        return path
    cached = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    return cached if cached.is_file() else None


class InceptionFeatures(FeatureExtractor):
    """The FID InceptionV3: 2048-d pool features and 1008 logits (for Inception Score).

    Grey images are repeated to three channels and images are quantised to uint8 before the
    network resizes them to 299x299, as torch-fidelity and the reference TF code do.
    """

    name = "inception"
    num_features, num_classes = 2048, 1008
    classes_of = "imagenet"  # the TF graph's 1008 logits: ImageNet's classes, padded

    def __init__(self, weights: str | Path | None = None) -> None:
        super().__init__()
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import (
                URL_INCEPTION_V3,
                FeatureExtractorInceptionV3,
            )
        except ImportError as e:  # pragma: no cover - torch-fidelity is a dependency
            raise GenlabError(
                "features=inception needs torch-fidelity: pip install torch-fidelity"
            ) from e
        path = resolve_inception_weights(weights)
        try:
            self.net = FeatureExtractorInceptionV3(
                "inception-v3-compat",
                ["2048", "logits_unbiased"],
                feature_extractor_weights_path=str(path) if path else None,
            )
        except (OSError, RuntimeError) as e:  # URLError is an OSError
            raise GenlabError(
                f"Could not get the FID Inception weights ({type(e).__name__}: {e}). On a machine "
                f"with internet, download {URL_INCEPTION_V3} and pass "
                f"features.weights=/path/to/{INCEPTION_FILE} (or set ${INCEPTION_ENV}); or, "
                f"for MNIST-like data, use the offline extractor: features=mnist_classifier."
            ) from e
        self.identity = f"{self.name}-{file_digest(path) if path else INCEPTION_FILE[:-4]}"

    @torch.no_grad()
    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        x = images.clamp(0, 1).mul(255).round().to(torch.uint8)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        features, logits = self.net(x)
        return features, logits

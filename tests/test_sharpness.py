"""benchmarks/sharpness.py: the blur measure behind the VAE-GAN's "as sharp as" comparison."""

from __future__ import annotations

import importlib.util

import pytest
import torch.nn.functional as F

from genlab.data.mnist import MNISTDataModule
from tests.conftest import ROOT, SHIPPED


def _bench():
    spec = importlib.util.spec_from_file_location("sharpness", ROOT / "benchmarks" / "sharpness.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_blur_lowers_sharpness() -> None:
    bench = _bench()
    data = MNISTDataModule(data_dir=str(SHIPPED), train_fraction=0.01)
    data.setup("fit")
    digits = data.train_set.images[:64].float() / 255
    blurred = F.avg_pool2d(digits, 3, stride=1, padding=1)
    assert bench.sharpness(blurred) < 0.5 * bench.sharpness(digits)


def test_prints_a_row_per_checkpoint(capsys: pytest.CaptureFixture[str]) -> None:
    _bench().main(["pretrained:vaegan_mnist", "pretrained:default", "--images", "64"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| pre")]
    vaegan, default = (row.split("|")[2:4] for row in rows)
    assert float(vaegan[0]) > 0 and float(vaegan[1]) > 0  # reconstructions and samples
    assert default[0].strip() == "-" and float(default[1]) > 0  # a GAN reconstructs nothing

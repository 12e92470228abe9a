"""sample.py asks a conditional model for classes: labels=[3,3,7] (image i of class
labels[i % len(labels)]), labels=all (one row per class, a column is one latent) and
mode=interpolate labels=[...] (each walk within one class); an unconditional model refuses
labels with one line. (The rest of sample.py: test_cli.py, test_eval_sample_inputs.py,
test_entry_errors.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

import genlab.sample as sample
from genlab.checkpoints.build import build_model
from genlab.checkpoints.keys import CONFIG_KEY
from genlab.checkpoints.load import load_model
from genlab.config.instantiate import to_dict
from genlab.errors import ConfigError
from tests.conftest import CONF, run_script, tiny_overrides

CLASSES = 10


def _checkpoint(folder: Path, model: str) -> Path:
    """A checkpoint as train.py writes it (weights + the resolved config), of tiny nets fresh
    from their initialisation: what sample.py reads, without a training run."""
    overrides = [*tiny_overrides(model), f"++data.num_classes={CLASSES}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(folder / "run")
    built, _ = build_model(cfg)
    path = folder / f"{model}.ckpt"
    torch.save({"state_dict": built.state_dict(), CONFIG_KEY: to_dict(cfg)}, path)
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("checkpoints")
    return {model: _checkpoint(folder, model) for model in ("cgan", "cvae", "gan")}


def _cfg(ckpt: Path, out: Path, **kwargs: object) -> object:
    """sample.py's config (conf/sample.yaml's defaults) with ``kwargs``."""
    base = {
        "ckpt_path": str(ckpt), "n": None, "labels": None, "per_class": 10, "mode": "samples",
        "steps": 10, "seed": 0, "batch_size": 4, "device": "cpu", "out": str(out),
    }  # fmt: skip
    return OmegaConf.create({**base, **kwargs})


def _run(ckpt: Path, out: Path, **kwargs: object) -> torch.Tensor:
    return torch.from_numpy(np.load(sample.run(_cfg(ckpt, out, **kwargs))))


class LabelPainter(torch.nn.Module):
    """A conditional model whose images show what it was asked: row 0 of each image is its
    class / 10, the other rows sigmoid(z[0]) (its latent)."""

    num_classes, latent_dim = CLASSES, 4

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("anchor", torch.zeros(()))  # device and dtype, as a model has
        self.asked: list[torch.Tensor] = []

    @property
    def device(self) -> torch.device:
        return self.anchor.device

    @property
    def dtype(self) -> torch.dtype:
        return self.anchor.dtype

    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        assert labels is not None, "a conditional model was asked for no classes"
        self.asked.append(labels.cpu())
        images = torch.sigmoid(z[:, 0]).view(-1, 1, 1, 1).repeat(1, 1, 8, 8)
        images[:, 0, 0, :] = labels.float().view(-1, 1) / 10
        return images


def _classes(images: torch.Tensor) -> list[int]:
    return (images[:, 0, 0, 0] * 10).round().long().tolist()


def _latents(images: torch.Tensor) -> torch.Tensor:
    return images[:, 0, 4, 4]


@pytest.fixture
def painter(monkeypatch: pytest.MonkeyPatch) -> LabelPainter:
    model = LabelPainter()
    monkeypatch.setattr(sample, "load_model", lambda *args, **kwargs: (model, None))
    return model


def test_listed_labels_ask_for_exactly_those_classes(painter: LabelPainter, tmp_path) -> None:
    images = _run(Path("painter.ckpt"), tmp_path / "s.npy", labels=[3, 3, 7])
    assert images.shape == (3, 1, 8, 8) and _classes(images) == [3, 3, 7]
    cycled = _run(Path("painter.ckpt"), tmp_path / "c.npy", labels=[3, 7], n=5, batch_size=2)
    assert _classes(cycled) == [3, 7, 3, 7, 3]
    # Labels change the classes, not the latents: those of the same n and seed without labels.
    free = _run(Path("painter.ckpt"), tmp_path / "f.npy", n=5)
    torch.testing.assert_close(_latents(cycled), _latents(free), rtol=0, atol=0)
    one = _run(Path("painter.ckpt"), tmp_path / "one.npy", labels=4, n=2)
    assert _classes(one) == [4, 4]


def test_labels_all_is_one_row_per_class(painter: LabelPainter, tmp_path: Path) -> None:
    images = _run(Path("painter.ckpt"), tmp_path / "all.npy", labels="all", per_class=3)
    assert images.shape == (CLASSES * 3, 1, 8, 8)
    rows = images.view(CLASSES, 3, 1, 8, 8)
    assert [_classes(row) for row in rows] == [[c] * 3 for c in range(CLASSES)]
    for row in rows[1:]:  # a column is one latent across the classes
        torch.testing.assert_close(_latents(row), _latents(rows[0]), rtol=0, atol=0)
    assert len(set(_latents(rows[0]).tolist())) == 3  # and the columns differ
    png = sample.run(_cfg(Path("painter.ckpt"), tmp_path / "all.png", labels="all", per_class=3))
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ConfigError, match=r"^labels=all n=5: .* set per_class= instead of n="):
        sample.run(_cfg(Path("painter.ckpt"), tmp_path / "x.npy", labels="all", n=5))


def test_interpolation_within_one_class(painter: LabelPainter, tmp_path: Path) -> None:
    walks = _run(
        Path("painter.ckpt"), tmp_path / "w.npy", mode="interpolate", labels=[3], n=4, steps=5
    )
    assert walks.shape == (4 * 5, 1, 8, 8) and _classes(walks) == [3] * 20
    rows = _latents(walks).view(4, 5)
    assert all(len(set(row.tolist())) == 5 for row in rows)  # z moves along each walk
    unlabelled = sample.interpolate(painter, 4, 5, seed=0, labels=torch.tensor([3] * 4))
    torch.testing.assert_close(walks, unlabelled, rtol=0, atol=0)  # the same seeded walks
    every = _run(
        Path("painter.ckpt"), tmp_path / "e.npy", mode="interpolate", labels="all", steps=5
    )
    assert every.shape == (CLASSES * 5, 1, 8, 8)
    by_class = every.view(CLASSES, 5, 1, 8, 8)
    assert [_classes(row) for row in by_class] == [[c] * 5 for c in range(CLASSES)]
    for row in by_class[1:]:  # one walk, every class
        torch.testing.assert_close(_latents(row), _latents(by_class[0]), rtol=0, atol=0)
    # No labels: one uniformly drawn class per walk, the same class along it.
    free = _run(Path("painter.ckpt"), tmp_path / "f.npy", mode="interpolate", n=6, steps=3)
    assert all(len(set(_classes(row))) == 1 for row in free.view(6, 3, 1, 8, 8))


def test_a_class_the_model_lacks_is_refused(painter: LabelPainter, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^labels=\[3,12\]: .* has 10 classes \(0..9\), not 12:"):
        sample.run(_cfg(Path("painter.ckpt"), tmp_path / "x.npy", labels=[3, 12]))
    for bad in ([], "some", [-1], [1.5]):
        with pytest.raises(ConfigError, match=r"^labels=.*needs all, or a list of class"):
            sample.run(_cfg(Path("painter.ckpt"), tmp_path / "x.npy", labels=bad))
    assert painter.asked == []  # refused before anything was drawn


@pytest.mark.parametrize("model", ["cgan", "cvae"])
def test_labels_reach_a_real_conditional_model(
    checkpoints: dict[str, Path], model: str, tmp_path: Path
) -> None:
    images = _run(checkpoints[model], tmp_path / "s.npy", labels=[3, 3, 7], seed=5)
    loaded, _ = load_model(checkpoints[model])
    assert loaded.num_classes == CLASSES
    asked = torch.tensor([3, 3, 7])
    expected = loaded.sample(3, torch.Generator().manual_seed(5), labels=asked)
    torch.testing.assert_close(images, expected, rtol=0, atol=1e-6)
    other = loaded.sample(3, torch.Generator().manual_seed(5), labels=torch.tensor([0, 0, 0]))
    assert not torch.allclose(images, other, atol=1e-4)  # the classes change the images
    grid = _run(checkpoints[model], tmp_path / "all.npy", labels="all", per_class=2, seed=5)
    for c in range(CLASSES):
        expected = loaded.sample(2, torch.Generator().manual_seed(5), labels=torch.full((2,), c))
        torch.testing.assert_close(grid[2 * c : 2 * c + 2], expected, rtol=0, atol=1e-6)
    walks = _run(
        checkpoints[model], tmp_path / "w.npy", mode="interpolate", labels=[7], n=2, steps=3
    )
    assert walks.shape == (6, 1, 28, 28)


def test_an_unconditional_model_refuses_labels(checkpoints: dict[str, Path], tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"^labels=all: the model of ckpt_path=.* unconditional"):
        sample.run(_cfg(checkpoints["gan"], tmp_path / "x.npy", labels="all"))
    result = run_script(
        "sample.py", f"ckpt_path={checkpoints['gan']}", "labels=[3,3,7]", "device=cpu",
        f"out={tmp_path / 's.npy'}", f"hydra.run.dir={tmp_path / 'run'}",
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("genlab: error: labels=[3,3,7]: the model of ckpt_path=")
    assert "is unconditional" in lines[0] and "drop labels=" in lines[0]
    assert not (tmp_path / "s.npy").exists()


def test_the_command_line_draws_labelled_images(checkpoints: dict[str, Path], tmp_path) -> None:
    out = tmp_path / "s.npy"
    result = run_script(
        "sample.py", f"ckpt_path={checkpoints['cgan']}", "labels=[3,3,7]", "device=cpu",
        f"out={out}", f"hydra.run.dir={tmp_path / 'run'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    loaded, _ = load_model(checkpoints["cgan"])
    expected = loaded.sample(3, torch.Generator().manual_seed(0), labels=torch.tensor([3, 3, 7]))
    torch.testing.assert_close(torch.from_numpy(np.load(out)), expected, rtol=0, atol=1e-6)


def test_unconditional_samples_are_unchanged(checkpoints: dict[str, Path], tmp_path) -> None:
    """n=null is 64 images, the seed's as ever (draw without labels)."""
    loaded, _ = load_model(checkpoints["gan"])
    images = _run(checkpoints["gan"], tmp_path / "s.npy")
    from genlab.metrics.sampling import draw

    torch.testing.assert_close(images, draw(loaded, 64, 0, 4), rtol=0, atol=0)

"""eval.py and sample.py refuse bad inputs with one line, before any statistic or model load:
sample files (unreadable, not images, non-finite, out of range, too few for a metric), the
values of their arguments, and a diverged checkpoint's NaN samples."""

from __future__ import annotations

import collections
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from genlab.errors import CheckpointError, ConfigError, DataError, GenlabError
from genlab.evaluate import check_sample_shape, load_samples
from genlab.evaluate import run as evaluate
from genlab.metrics.sampling import draw
from genlab.sample import run as sample
from tests.conftest import run_script, tiny_overrides

IMAGES = np.random.default_rng(0).random((12, 1, 28, 28), dtype=np.float32)


def _npy(array: np.ndarray, allow_pickle: bool = False) -> Callable[[Path], None]:
    return lambda path: np.save(path, array, allow_pickle=allow_pickle)


def _with(value: float) -> np.ndarray:
    x = IMAGES.copy()
    x[3, 0, 5, 5] = value
    return x


def _truncated(path: Path) -> None:
    np.save(path, IMAGES)
    path.write_bytes(path.read_bytes()[:1000])


def _truncated_pt(path: Path) -> None:
    torch.save(torch.from_numpy(IMAGES), path)
    path.write_bytes(path.read_bytes()[:1000])


def _archive(path: Path) -> None:
    with open(path, "wb") as f:  # np.savez on a file object keeps the .npy name
        np.savez(f, images=IMAGES)


class _Foreign:  # a pickled object of a class torch's weights_only loader refuses
    pass


# file name -> (writer, what the one line says)
BAD_FILES = {
    "nan.npy": (_npy(_with(np.nan)), r"holds NaN/Inf in 1 of 12 images \(first: 3\)"),
    "inf.npy": (_npy(_with(np.inf)), r"holds NaN/Inf in 1 of 12 images"),
    "objects.npy": (
        _npy(np.array([IMAGES[0], "a"], dtype=object), allow_pickle=True),
        r"holds Python objects \(dtype object\), which are not loaded",
    ),
    "complex.npy": (_npy(IMAGES.astype(np.complex64)), r"holds complex numbers"),
    "strings.npy": (_npy(np.full((4, 28, 28), "a")), r"holds strings"),
    "int64.npy": (_npy((IMAGES * 255).astype(np.int64)), r"holds torch.int64 values: save uint8"),
    "truncated.npy": (_truncated, r"cannot be read .*truncated or corrupt"),
    "text.npy": (lambda p: p.write_text("hello"), r"is not a \.npy file"),
    "archive.npy": (_archive, r"is a zip archive"),
    "empty.npy": (lambda p: p.write_bytes(b""), r"is empty \(0 bytes\)"),
    "no_images.npy": (_npy(IMAGES[:0]), r"has shape \(0, 1, 28, 28\)"),
    "channels.npy": (_npy(np.zeros((4, 2, 28, 28), np.float32)), r"with C = 1 or 3"),
    "tanh.npy": (_npy(IMAGES * 2 - 1), r"scale float images to \[0, 1\] \(a tanh"),
    "pixels.npy": (_npy(IMAGES * 255), r"these look like 0-255 pixels: x / 255"),
    "dict.pt": (lambda p: torch.save({"images": torch.zeros(2)}, p), r"holds a dict with keys"),
    "list.pt": (lambda p: torch.save([torch.zeros(2)], p), r"holds a list, not a tensor"),
    "counter.pt": (lambda p: torch.save(collections.Counter(a=1), p), r"holds a Counter"),
    "foreign.pt": (lambda p: torch.save(_Foreign(), p), r"holds Python objects other than"),
    "truncated.pt": (_truncated_pt, r"cannot be read .*truncated, corrupt or not a PyTorch"),
    "complex.pt": (lambda p: torch.save(torch.zeros(4, 28, 28, dtype=torch.cfloat), p), r"complex"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_sample_files_are_one_line(name: str, tmp_path: Path) -> None:
    write, message = BAD_FILES[name]
    path = tmp_path / name
    write(path)
    with pytest.raises(DataError, match=message) as err:
        load_samples(path)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"samples={path}")


@pytest.mark.parametrize(
    ("array", "layout"),
    [
        (IMAGES, "float32 NCHW"),
        ((IMAGES * 255).round().astype(np.uint8).transpose(0, 2, 3, 1), "uint8 NHWC"),
        (IMAGES.astype(np.float16)[:, 0], "float16 NHW"),
        (IMAGES.astype(">f4"), "big-endian float32"),
        (IMAGES > 0.5, "bool: binarised images"),
    ],
)
def test_good_sample_files_load(array: np.ndarray, layout: str, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", array)
    x = load_samples(tmp_path / "x.npy")
    assert x.shape == (12, 1, 28, 28) and x.dtype == torch.float32, layout
    assert x.min() >= 0 and x.max() <= 1


def test_too_few_samples_names_what_each_metric_needs(tmp_path: Path, make_cfg) -> None:
    np.save(tmp_path / "one.npy", IMAGES[:3])
    cfg = make_cfg(f"samples={tmp_path / 'one.npy'}", "data=mnist", config_name="eval")
    with pytest.raises(DataError) as err:
        evaluate(cfg)
    text = str(err.value)
    assert "holds 3 image(s), too few" in text and "fid needs" not in text
    assert "is needs >= 10" in text and "pr needs >= 4" in text
    cfg = make_cfg(
        "ckpt_path=missing.ckpt", "num_samples=1", "metrics=[fid,memorization]",
        config_name="eval",
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"num_samples=1 is too few: fid needs >= 2 \(a cov"):
        evaluate(cfg)  # checked before the (missing) checkpoint is opened


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((12, 1, 1, 1), r"holds 1x1 images, below the 8x8 that features=mnist_classifier scores"),
        ((12, 3, 7, 7), r"holds 7x7 images, below the 8x8 that features=inception scores"),
        ((12, 1, 28, 20), r"holds 28x20 images, but data sets give square ones"),
    ],
)
def test_samples_the_data_cannot_give_are_refused(
    shape: tuple[int, ...], message: str, tmp_path: Path, make_cfg
) -> None:
    # 1x1 "images" were scored against MNIST shrunk to 1x1.
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).random(shape, dtype=np.float32))
    features = "inception" if shape[1] == 3 else "mnist_classifier"
    cfg = make_cfg(f"samples={path}", "data=mnist", f"features={features}", config_name="eval")
    with pytest.raises(DataError, match=message) as err:
        evaluate(cfg)  # before the data, the features or their weights are loaded
    text = str(err.value)
    assert text.startswith(f"samples={path}") and text.endswith("(data.image_size=28).")


def test_the_smallest_scored_samples_pass_the_shape_check(make_cfg) -> None:
    cfg = make_cfg("samples=x.npy", "data=mnist", config_name="eval")
    check_sample_shape(torch.zeros(2, 1, 8, 8), "x.npy", cfg.features, cfg.data)


# eval.py argument -> what the line says; the checkpoint does not exist, so each must be
# refused before anything is loaded.
EVAL_ARGS = {
    "num_samples=0": r"num_samples=0 \(int\): needs an integer >= 1",
    "num_samples=1e4": r"num_samples=10000.0 \(float\): needs an integer",
    "batch_size=0": r"batch_size=0 \(int\): needs an integer >= 1",
    "nll_samples=-5": r"nll_samples=-5 \(int\): needs an integer >= 1",
    "seed=abc": r"seed='abc' \(str\): needs an integer from 0 to 4294967295",
    "seed=-1": r"seed=-1 \(int\): needs an integer from 0",
    "metrics=5": r"metrics=5 \(int\): needs a list of names",
    "metrics=[]": r"metrics=\[\] \(list\): needs a list of names",
    "metrics=[fid,[kid]]": r"metrics=\['fid', \['kid'\]\] \(list\)",
    "samples=5": r"samples=5 \(int\): needs a file path",
    "trainer.max_epochs=abc": r"trainer.max_epochs='abc' \(str\)",
}


@pytest.mark.parametrize("override", sorted(EVAL_ARGS))
def test_eval_arguments_are_checked_before_loading(override: str, make_cfg) -> None:
    cfg = make_cfg("ckpt_path=missing.ckpt", override, config_name="eval")
    with pytest.raises(ConfigError, match=EVAL_ARGS[override]) as err:
        evaluate(cfg)
    assert "\n" not in str(err.value)


def test_one_metric_name_as_a_string_is_accepted(make_cfg) -> None:
    cfg = make_cfg("ckpt_path=missing.ckpt", "metrics=fid", config_name="eval")
    with pytest.raises(CheckpointError, match="does not exist"):  # past the argument checks
        evaluate(cfg)


def _sample_cfg(tmp_path: Path, **values: object) -> DictConfig:
    base = {
        "ckpt_path": str(tmp_path / "missing.ckpt"),
        "out": str(tmp_path / "s.npy"),
        **dict(n=4, seed=0, batch_size=2, device="cpu", mode="samples", steps=10),
    }
    return OmegaConf.create({**base, **values})


def test_sample_arguments_are_checked_before_loading(tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("")
    cases = {
        "n=0": ({"n": 0}, r"n=0 \(int\): needs an integer >= 1"),
        "batch_size=0": ({"batch_size": 0}, r"batch_size=0 \(int\): needs an integer >= 1"),
        "seed=abc": ({"seed": "abc"}, r"seed='abc' \(str\): needs an integer from 0"),
        "device=foo": ({"device": "foo"}, r"needs auto, cpu, mps, cuda or cuda:<index>"),
        "out under a file": (
            {"out": str(tmp_path / "a_file" / "sub" / "s.npy")},
            rf"{re.escape(str(tmp_path / 'a_file'))} is a file, so no folder can be made",
        ),
        "out a folder": ({"out": str(tmp_path)}, r"the suffix must be one of"),
        "out a folder named .npy": (
            {"out": str(tmp_path / "d.npy")},
            r"that is a folder, not a file name",
        ),
        "steps=0": ({"mode": "interpolate", "steps": 0}, r"steps=0 \(int\): needs an integer >= 2"),
        "mode=walk": ({"mode": "walk"}, r"needs one of samples, interpolate"),
        "ckpt_path=???": ({"ckpt_path": "???"}, r"ckpt_path must be set"),
    }
    (tmp_path / "d.npy").mkdir()
    for case, (values, message) in cases.items():
        with pytest.raises(ConfigError, match=message) as err:
            sample(_sample_cfg(tmp_path, **values))
        assert "\n" not in str(err.value), case


class _Diverged(torch.nn.Module):
    """A model whose every sample is NaN, as after a diverged training step."""

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.full((n, 1, 28, 28), float("nan"))


def test_nan_samples_of_a_model_stop_at_the_first_batch() -> None:
    with pytest.raises(CheckpointError, match=r"ckpt_path=x.ckpt generates NaN images \(4 of"):
        draw(_Diverged(), 10, seed=0, batch_size=4, source="ckpt_path=x.ckpt")
    assert torch.isnan(draw(_Diverged(), 2, seed=0, batch_size=4)).all()  # unchecked: as before


def test_errors_are_the_only_output(tmp_path: Path) -> None:
    """As a user sees them: exit 1, one line on stderr, nothing before it (no config tree)."""
    path = tmp_path / "nan.npy"
    np.save(path, _with(np.nan))
    commands = {  # a NaN file used to kill the process in the FID's matrix routines (exit 139)
        "eval.py": [f"samples={path}", "data=mnist", "metrics=[fid]"],
        "sample.py": ["ckpt_path=missing.ckpt", "batch_size=0"],
    }
    for script, args in commands.items():
        result = run_script(script, *args, f"hydra.run.dir={tmp_path / script}")
        assert result.returncode == 1, result.stderr[-3000:]
        assert result.stdout == "", result.stdout[:2000]
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("genlab: error: "), line


@pytest.mark.slow
def test_a_diverged_checkpoint_is_refused_by_eval_and_sample(tmp_path: Path, make_cfg) -> None:
    """A checkpoint with NaN weights: eval.py and sample.py say so, no file of NaN is written
    and no statistic is computed (about 30 s: one tiny VAE run)."""
    run_dir = tmp_path / "vae"
    result = run_script(
        "train.py", *tiny_overrides("vae"), "debug=limit", "test=false", f"hydra.run.dir={run_dir}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    for key, value in ckpt["state_dict"].items():
        if key.startswith("decoder.") and value.is_floating_point():
            value.fill_(float("nan"))
    diverged = tmp_path / "diverged.ckpt"
    torch.save(ckpt, diverged)
    message = rf"ckpt_path={re.escape(str(diverged))} generates NaN images"
    for metrics in ("[fid,kid,is,pr,coverage]", "[memorization]"):
        cfg = make_cfg(
            f"ckpt_path={diverged}", f"metrics={metrics}", "num_samples=64", "trainer=cpu",
            "extras.print_config=false", config_name="eval",
        )  # fmt: skip
        with pytest.raises(CheckpointError, match=message):
            evaluate(cfg)
    for mode in ("samples", "interpolate"):
        out = tmp_path / f"{mode}.npy"
        with pytest.raises(GenlabError, match=message):
            sample(_sample_cfg(tmp_path, ckpt_path=str(diverged), out=str(out), mode=mode))
        assert not out.exists()

"""Derived files heal themselves, bad images and damaged data files never stop a run.

- A broken real-feature cache (``.pt``) or image-folder cache (``.u8`` + ``.json``) is moved
  aside to ``<name>.corrupt-<n>`` (never deleted) with one warning and rebuilt in the same run.
- An image above PIL's decompression-bomb limit is skipped and reported like a broken file, in
  training and in the quality tool (tested with a lowered ``PIL.Image.MAX_IMAGE_PIXELS``).
- A damaged MNIST ``.gz`` is one line naming it and the fix; a damaged decompressed file is
  decompressed again from its ``.gz``. Every broken file lives in ``tmp_path``.
"""

from __future__ import annotations

import gzip
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import open_dict
from PIL import Image
from torchvision import datasets

from genlab.data import mnist
from genlab.data.image_folder import (
    BadImage,
    ImageFolderDataModule,
    check_header,
    infer_image_size,
    open_image,
    scan_folder,
)
from genlab.data.mnist import MNISTDataModule, ensure_raw_files, raw_file_names
from genlab.errors import CheckpointError, DataError
from genlab.metrics import feature_sets
from genlab.metrics.feature_sets import real_features
from genlab.metrics.features import MNISTClassifierFeatures

from .conftest import CONF, SHIPPED, run_script


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# --- real-feature cache ------------------------------------------------------------------------


class _ToyData:
    """The part of a data module that real_features reads: a named test split."""

    dataset = "toy"

    def __init__(self, n: int = 24) -> None:
        images = torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(0))
        self.test_set = torch.utils.data.TensorDataset(images, torch.zeros(n))


@pytest.fixture(scope="module")
def extractor() -> MNISTClassifierFeatures:
    return MNISTClassifierFeatures()


def _damage_pt(path: Path, kind: str, good: dict) -> None:
    data = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(b"\x80\x02garbage, not a tensor file" * 10)
    elif kind == "wrong_type":
        torch.save([1, 2, 3], path)
    elif kind == "wrong_key":  # a cache of other images copied under this name
        torch.save({**good, "key": "0" * 64}, path)
    elif kind == "wrong_shape":
        torch.save({**good, "features": good["features"][:5]}, path)
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind", ["truncated", "empty", "garbage", "wrong_type", "wrong_key", "wrong_shape"]
)
def test_broken_feature_cache_is_moved_aside_and_rebuilt(
    extractor, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch, kind: str
) -> None:
    data = _ToyData()
    first = real_features(data, "test", extractor, tmp_path)
    (path,) = tmp_path.glob("toy-test-*.pt")
    _damage_pt(path, kind, torch.load(path, weights_only=True))
    broken = path.read_bytes()
    calls = []
    original = feature_sets.extract
    monkeypatch.setattr(
        feature_sets, "extract", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    with caplog.at_level(logging.WARNING):
        healed = real_features(data, "test", extractor, tmp_path)
    (warning,) = _warnings(caplog)  # exactly one, naming the file and where it went
    assert str(path) in warning and f"{path}.corrupt-1" in warning
    assert "weights_only" not in warning
    assert (tmp_path / f"{path.name}.corrupt-1").read_bytes() == broken  # kept, not deleted
    assert len(calls) == 1 and torch.equal(healed[0], first[0]) and torch.equal(healed[1], first[1])
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again = real_features(data, "test", extractor, tmp_path)  # the rebuilt file is a hit
    assert not _warnings(caplog) and len(calls) == 1 and torch.equal(again[0], first[0])


def test_a_second_breakage_does_not_overwrite_the_first(extractor, tmp_path: Path) -> None:
    data = _ToyData()
    real_features(data, "test", extractor, tmp_path)
    (path,) = tmp_path.glob("toy-test-*.pt")
    for n in (1, 2):
        path.write_bytes(f"broken {n}".encode())
        real_features(data, "test", extractor, tmp_path)
    assert (tmp_path / f"{path.name}.corrupt-1").read_bytes() == b"broken 1"
    assert (tmp_path / f"{path.name}.corrupt-2").read_bytes() == b"broken 2"


def test_training_heals_a_corrupt_feature_cache(make_cfg, tmp_path: Path) -> None:
    """A garbage FID cache used to crash train.py in its first validation epoch."""
    from genlab.train import run

    cache = tmp_path / "cache"
    for attempt in ("first", "healing"):
        cfg = make_cfg("model=gan", "debug=fast", f"paths.cache_dir={cache}")
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / attempt)
        assert run(cfg) is not None
        if attempt == "first":
            caches = sorted(cache.glob("*.pt"))
            assert caches
            for path in caches:
                path.write_bytes(b"garbage")
    assert sorted(cache.glob("*.pt")) == caches
    assert all(torch.load(p, weights_only=True)["features"].ndim == 2 for p in caches)
    assert sorted(cache.glob("*.corrupt-1")) == [p.with_name(p.name + ".corrupt-1") for p in caches]


def test_damaged_classifier_weights_are_one_line(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"weight": torch.zeros(3)}}, foreign)
    for path, why in ((garbage, "cannot be loaded"), (foreign, "not this classifier's weights")):
        with pytest.raises(CheckpointError) as err:
            MNISTClassifierFeatures(weights=path)
        message = str(err.value)
        assert "\n" not in message and str(path) in message and why in message
        assert "train_mnist_classifier.py" in message and "weights_only" not in message


# --- image-folder cache ------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "pictures"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(root / f"{i}.png")
    (root / "broken.png").write_bytes(b"not a picture")
    return root


def _cached(folder: Path, tmp_path: Path) -> ImageFolderDataModule:
    dm = ImageFolderDataModule(
        path=str(folder), image_size=32, cache=True, cache_dir=str(tmp_path / "cache")
    )
    dm.setup("fit")
    return dm


def _images(dm: ImageFolderDataModule) -> dict[str, torch.Tensor]:
    sets = (dm.train_set, dm.val_set)
    return {str(f): s[i][0] for s in sets for i, f in enumerate(s.files)}


def _damage_cache(data: Path, meta: Path, kind: str) -> None:
    if kind == "pixels_truncated":
        data.write_bytes(data.read_bytes()[:1000])
    elif kind == "pixels_empty":
        data.write_bytes(b"")
    elif kind == "pixels_appended":
        data.write_bytes(data.read_bytes() + b"\0" * 7)
    elif kind == "meta_truncated":
        meta.write_text(meta.read_text()[:20])
    elif kind == "meta_binary":
        meta.write_bytes(b"\xff\xfe\x00garbage")
    elif kind == "meta_wrong_type":
        meta.write_text("[1, 2, 3]")
    elif kind == "meta_other_files":
        content = json.loads(meta.read_text())
        meta.write_text(json.dumps({**content, "files": content["files"][1:]}))
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "pixels_truncated",
        "pixels_empty",
        "pixels_appended",
        "meta_truncated",
        "meta_binary",
        "meta_wrong_type",
        "meta_other_files",
    ],
)
def test_broken_image_folder_cache_is_moved_aside_and_rebuilt(
    folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    expected = _images(_cached(folder, tmp_path))
    (data,) = (tmp_path / "cache").rglob("*.u8")
    meta = data.with_suffix(".json")
    _damage_cache(data, meta, kind)
    broken = {p: p.read_bytes() for p in (data, meta)}
    with caplog.at_level(logging.WARNING):
        dm = _cached(folder, tmp_path)
    healing = [w for w in _warnings(caplog) if w.startswith("image-folder cache")]
    assert len(healing) == 1 and str(data) in healing[0], _warnings(caplog)
    for p, content in broken.items():  # both halves kept for inspection
        assert p.with_name(p.name + ".corrupt-1").read_bytes() == content
    rebuilt = _images(dm)
    assert rebuilt.keys() == expected.keys()
    assert all(torch.equal(rebuilt[k], expected[k]) for k in expected)
    assert "broken.png" in {Path(p).name for p in dm.skipped}
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        _cached(folder, tmp_path)  # the rebuilt cache is a hit
    assert not [w for w in _warnings(caplog) if w.startswith("image-folder cache")]


def test_image_folder_cache_metadata_is_written_atomically(
    folder: Path, tmp_path: Path, monkeypatch
) -> None:
    """A crash while writing the metadata leaves no half-written file: the next run rebuilds."""

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    import genlab.data.image_folder as image_folder

    monkeypatch.setattr(image_folder.json, "dumps", crash)
    with pytest.raises(KeyboardInterrupt):
        _cached(folder, tmp_path)
    monkeypatch.undo()
    cache = tmp_path / "cache" / "image_folder"
    assert not list(cache.glob("*.json")) and not list(cache.glob(".*"))  # no temporary files
    assert len(_images(_cached(folder, tmp_path))) == 10


def test_folder_of_only_bad_files_is_one_error_with_the_cache(tmp_path: Path) -> None:
    root = tmp_path / "bad"
    root.mkdir()
    (root / "a.png").write_bytes(b"junk")
    with pytest.raises(DataError, match="none of the images"):
        _cached(root, tmp_path)


# --- images above PIL's decompression-bomb limit -----------------------------------------------


@pytest.fixture
def bomb_folder(folder: Path, monkeypatch) -> Path:
    """``folder`` plus one image above the (lowered) pixel limit: 48x48 > 2 x 1000 px, the
    24x24 pictures stay below 1000 px, so only the big one is refused."""
    Image.new("RGB", (48, 48), (200, 30, 30)).save(folder / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    return folder


def test_a_huge_image_is_skipped_not_fatal(bomb_folder: Path, tmp_path: Path) -> None:
    huge = bomb_folder / "huge.png"
    for check in (lambda: check_header(huge), lambda: open_image(huge, 3)):
        with pytest.raises(BadImage, match="too large to decode"):
            check()
    assert infer_image_size(bomb_folder) == 28  # headers only; the huge one is left out
    for cache in (False, True):
        dm = ImageFolderDataModule(
            path=str(bomb_folder), image_size=32, batch_size=4, cache=cache,
            cache_dir=str(tmp_path / "c"),
            report_dir=str(tmp_path / f"report{cache}"),
        )  # fmt: skip
        dm.setup("fit")
        assert dm.skipped[str(huge)].startswith("too large to decode")
        assert len(dm.train_set) + len(dm.val_set) == 10
        report = json.loads((tmp_path / f"report{cache}" / "data_report.json").read_text())
        assert str(huge) in report["skipped"]
        x, _ = next(iter(dm.train_dataloader()))
        assert x.shape[1:] == (3, 32, 32)


def test_quality_tool_reports_a_huge_image_as_unreadable(bomb_folder: Path, tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir

    from genlab.data.quality import run

    out = tmp_path / "quality"
    overrides = [f"data.path={bomb_folder}", f"paths.output_dir={out}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("quality", overrides=overrides)
    before = {p.name: p.read_bytes() for p in bomb_folder.iterdir()}
    for command in ("report", "clean"):
        report = run(cfg, command)
        assert report["unreadable"][str(bomb_folder / "huge.png")].startswith("too large")
        assert report["readable"] == 10 and str(bomb_folder / "huge.png") not in report["clean"]
    assert "huge.png" not in (out / "clean_files.txt").read_text()
    assert {p.name: p.read_bytes() for p in bomb_folder.iterdir()} == before
    assert len(scan_folder(bomb_folder)) == 12


def test_training_skips_a_huge_image(make_cfg, bomb_folder: Path) -> None:
    from genlab.train import run

    cfg = make_cfg(
        "model=gan", "data=image_folder", f"data.path={bomb_folder}", "data.image_size=32",
        "data.num_workers=0", "data.batch_size=4", "data.train_fraction=1",
        "data.val_fraction=0.3", "test=false", "debug=fast",
    )  # fmt: skip
    assert run(cfg) is not None
    report = json.loads((Path(cfg.paths.output_dir) / "data_report.json").read_text())
    assert report["skipped"][str(bomb_folder / "huge.png")].startswith("too large")


# --- MNIST files -------------------------------------------------------------------------------

LABELS = "t10k-labels-idx1-ubyte"  # the smallest file: 4.5 kB packed


@pytest.fixture
def mnist_copy(tmp_path: Path, monkeypatch) -> Path:
    """The shipped .gz files and sums under tmp_path/MNIST; a fresh 'process' (no file is
    known to be sound yet)."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in raw_file_names(datasets.MNIST):
        shutil.copy(SHIPPED / "MNIST" / "raw" / f"{name}.gz", raw)
    shutil.copy(SHIPPED / "MNIST" / "SHA256SUMS.raw", tmp_path / "MNIST")
    monkeypatch.setattr(mnist, "_verified", set())
    return raw


def _one_line_naming(err: pytest.ExceptionInfo, path: Path) -> str:
    message = str(err.value)
    assert "\n" not in message and str(path) in message, message
    return message


@pytest.mark.parametrize("kind", ["truncated", "garbage", "bit_flip"])
def test_damaged_gz_is_one_line_and_untouched(mnist_copy: Path, tmp_path: Path, kind: str) -> None:
    packed = mnist_copy / f"{LABELS}.gz"
    data = packed.read_bytes()
    if kind == "truncated":
        damaged = data[: len(data) // 2]
    elif kind == "garbage":
        damaged = b"garbage" * 100
    else:  # inside the deflate stream
        damaged = bytearray(data)
        damaged[len(data) // 2] ^= 0xFF
        damaged = bytes(damaged)
    packed.write_bytes(damaged)
    with pytest.raises(DataError) as err:
        ensure_raw_files(tmp_path, "mnist", download=False)
    message = _one_line_naming(err, packed)
    assert "Re-copy it from the genlab repository (data/MNIST/raw/" in message
    assert "delete it so that it is downloaded again" in message
    assert packed.read_bytes() == damaged  # the .gz is never modified
    assert not (mnist_copy / LABELS).exists()
    assert not [p for p in mnist_copy.iterdir() if p.name.startswith(".")]  # no temporaries


@pytest.mark.parametrize("kind", ["truncated", "bit_flip", "empty"])
def test_damaged_decompressed_file_is_derived_again(
    mnist_copy: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch, kind: str
) -> None:
    ensure_raw_files(tmp_path, "mnist", download=False)
    target = mnist_copy / "t10k-images-idx3-ubyte"
    good = target.read_bytes()
    gz = {p.name: p.read_bytes() for p in mnist_copy.glob("*.gz")}
    if kind == "truncated":
        target.write_bytes(good[:1000])
    elif kind == "empty":
        target.write_bytes(b"")
    else:  # same size: only the checksum can tell
        flipped = bytearray(good)
        flipped[5000] ^= 1
        target.write_bytes(bytes(flipped))
    monkeypatch.setattr(mnist, "_verified", set())  # as in the next run
    with caplog.at_level(logging.WARNING):
        dm = MNISTDataModule(data_dir=str(tmp_path), download=False)
        dm.prepare_data()
        dm.setup("test")
    (warning,) = _warnings(caplog)
    assert str(target) in warning and "decompressing it again" in warning
    assert target.read_bytes() == good and len(dm.test_set) == 10_000
    assert {p.name: p.read_bytes() for p in mnist_copy.glob("*.gz")} == gz


def test_decompressed_files_are_hashed_once_per_process(
    mnist_copy: Path, tmp_path: Path, monkeypatch
) -> None:
    ensure_raw_files(tmp_path, "mnist", download=False)
    hashed = []
    original = mnist.file_sha256
    monkeypatch.setattr(mnist, "file_sha256", lambda p: hashed.append(p) or original(p))
    for _ in range(3):  # prepare_data, setup("fit"), setup("test")
        ensure_raw_files(tmp_path, "mnist", download=False)
    assert hashed == []  # verified when decompressed
    monkeypatch.setattr(mnist, "_verified", set())  # a new process
    ensure_raw_files(tmp_path, "mnist", download=False)
    ensure_raw_files(tmp_path, "mnist", download=False)
    assert len(hashed) == 4


def test_damaged_decompressed_file_without_gz_is_one_line(mnist_copy: Path, tmp_path: Path) -> None:
    ensure_raw_files(tmp_path, "mnist", download=False)
    target = mnist_copy / LABELS
    (mnist_copy / f"{LABELS}.gz").unlink()  # as when torchvision's download was unpacked
    target.write_bytes(target.read_bytes()[:100])
    mnist._verified.clear()  # as in the next run (the fixture gave this test its own set)
    with pytest.raises(DataError) as err:
        ensure_raw_files(tmp_path, "mnist", download=False)
    message = _one_line_naming(err, target)
    assert "SHA-256 mismatch" in message and "Delete it so that it is downloaded again" in message
    assert target.stat().st_size == 100  # not touched: there is nothing to derive it from


def test_without_checksums_the_idx_layout_catches_truncation(
    mnist_copy: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Fashion-MNIST and KMNIST ship no sums: the IDX header still gives the size."""
    (tmp_path / "MNIST" / "SHA256SUMS.raw").unlink()
    ensure_raw_files(tmp_path, "mnist", download=False)
    target = mnist_copy / LABELS
    good = target.read_bytes()
    target.write_bytes(good[:-10])
    mnist._verified.clear()
    with caplog.at_level(logging.WARNING):
        ensure_raw_files(tmp_path, "mnist", download=False)
    (warning,) = _warnings(caplog)
    assert "10008" in warning and target.read_bytes() == good
    with gzip.open(mnist_copy / f"{LABELS}.gz", "wb") as f:  # a valid gzip of something else
        f.write(b"\0\0\x08\x01" + b"\0\0\0\x05" + b"abc")
    target.unlink()
    with pytest.raises(DataError, match="does not decompress to the expected file"):
        ensure_raw_files(tmp_path, "mnist", download=False)


def test_broken_sums_file_is_one_line(mnist_copy: Path, tmp_path: Path) -> None:
    sums = tmp_path / "MNIST" / "SHA256SUMS.raw"
    sums.write_bytes(b"\x00\x01 garbage\n")
    with pytest.raises(DataError) as err:
        ensure_raw_files(tmp_path, "mnist", download=False)
    assert "line 1" in _one_line_naming(err, sums)


def test_train_cli_on_a_truncated_gz_is_one_line(mnist_copy: Path, tmp_path: Path) -> None:
    packed = mnist_copy / "train-images-idx3-ubyte.gz"
    packed.write_bytes(packed.read_bytes()[:100_000])
    result = run_script(
        "train.py", "model=vae", "data.download=false", f"paths.data_dir={tmp_path}",
        "debug=fast", "trainer=cpu", f"hydra.run.dir={tmp_path / 'run'}",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("genlab: error:") and str(packed) in last, last
    assert "Traceback" not in result.stderr

"""ImageFolderDataModule and the data-quality tool on a folder of generated, partly broken files."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genlab.data.image_folder import ImageFolderDataModule, scan_folder
from genlab.errors import ConfigError, DataError

from .conftest import run_script


def _picture(rng: np.random.Generator, size: tuple[int, int] = (48, 40)) -> Image.Image:
    """A coloured rectangle on a coloured background: distinct images, robust hashes."""
    w, h = size
    pixels = np.empty((h, w, 3), np.uint8)
    pixels[:] = rng.integers(0, 256, 3)
    x0, y0 = rng.integers(0, w // 2), rng.integers(0, h // 2)
    pixels[y0 : y0 + h // 2, x0 : x0 + w // 2] = rng.integers(0, 256, 3)
    return Image.fromarray(pixels)


@pytest.fixture
def messy_folder(tmp_path: Path) -> Path:
    """Two classes of good images plus every kind of awkward or broken file."""
    root = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for cls, ext in (("cats", "png"), ("dogs", "jpg")):
        (root / cls).mkdir(parents=True)
        for i in range(12):
            _picture(rng).save(root / cls / f"{i}.{ext}")
    cats = root / "cats"
    # Convertible: CMYK, palette, alpha, grey, animated GIF (first frame), WebP, BMP.
    _picture(rng).convert("CMYK").save(cats / "cmyk.jpg")
    _picture(rng).convert("P").save(cats / "palette.png")
    _picture(rng).convert("RGBA").save(cats / "alpha.png")
    _picture(rng).convert("L").save(cats / "grey.bmp")
    _picture(rng).save(cats / "anim.gif", save_all=True, append_images=[_picture(rng)])
    _picture(rng).save(cats / "photo.webp")
    # Broken: empty, not an image, truncated, too small.
    (cats / "empty.png").write_bytes(b"")
    (cats / "notes.jpg").write_text("not a picture")
    good = (root / "dogs" / "0.jpg").read_bytes()
    (cats / "truncated.jpg").write_bytes(good[: len(good) // 2])
    _picture(rng, (4, 4)).save(cats / "tiny.png")
    (root / "README.txt").write_text("ignored: not an image extension")
    return root


def _datamodule(path: Path, tmp_path: Path, **kwargs) -> ImageFolderDataModule:
    args = {"image_size": 32, "batch_size": 4, "report_dir": str(tmp_path / "report"), **kwargs}
    dm = ImageFolderDataModule(path=str(path), **args)
    dm.setup("fit")
    return dm


def test_messy_folder_loads_skips_and_reports(messy_folder: Path, tmp_path: Path) -> None:
    dm = _datamodule(messy_folder, tmp_path, val_fraction=0.2)
    assert dm.class_names == ["cats", "dogs"] and dm.num_classes == 2
    broken = {"empty.png", "notes.jpg", "tiny.png", "truncated.jpg"}
    assert {Path(p).name for p in dm.skipped} == broken
    # A file that breaks after the scan is replaced by the next one and recorded, not fatal.
    dm.train_set.files[3].write_bytes(b"overwritten since the scan")
    for dataset in (dm.train_set, dm.val_set):
        for i in range(len(dataset)):
            image, label = dataset[i]
            assert image.shape == (3, 32, 32) and image.min() >= 0 and image.max() <= 1
            assert label.item() in (0, 1)
    assert list(dm.train_set.failed) == [str(dm.train_set.files[3])] and not dm.val_set.failed
    assert len(dm.train_set) + len(dm.val_set) == 24 + 6  # good + convertible
    report = json.loads((tmp_path / "report" / "data_report.json").read_text())
    assert len(report["skipped"]) == 4 and report["classes"] == ["cats", "dogs"]
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (4,)


def test_grey_output_and_seeded_split(messy_folder: Path, tmp_path: Path) -> None:
    a = _datamodule(messy_folder, tmp_path, channels=1, train_fraction=0.5)
    b = _datamodule(messy_folder, tmp_path, channels=1, train_fraction=0.5)
    assert a.train_set[0][0].shape == (1, 32, 32)
    assert a.train_set.files == b.train_set.files and a.val_set.files == b.val_set.files
    full = _datamodule(messy_folder, tmp_path)
    assert len(a.train_set) == round(0.5 * len(full.train_set))
    assert set(a.val_set.files) == set(full.val_set.files)  # the hold-out never shrinks


def test_cache_decodes_once_and_matches(messy_folder: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    cached = _datamodule(messy_folder, tmp_path, cache=True, cache_dir=str(cache_dir))
    assert "truncated.jpg" in {Path(p).name for p in cached.skipped}
    plain = _datamodule(messy_folder, tmp_path)
    i = plain.train_set.files.index(cached.train_set.files[0])
    assert torch.equal(cached.train_set[0][0], plain.train_set[i][0])
    files = sorted(cache_dir.rglob("*.u8"))
    stamp = files[0].stat().st_mtime_ns
    _datamodule(messy_folder, tmp_path, cache=True, cache_dir=str(cache_dir))  # a hit
    assert sorted(cache_dir.rglob("*.u8")) == files and files[0].stat().st_mtime_ns == stamp
    _datamodule(messy_folder, tmp_path, cache=True, cache_dir=str(cache_dir), image_size=28)
    assert len(list(cache_dir.rglob("*.u8"))) == 2  # another size, another cache


def _split_folders(root: Path, counts: dict[str, int], seed: int) -> None:
    """A ``train/`` + ``val/`` layout with ``counts[split]`` random pictures in each."""
    rng = np.random.default_rng(seed)
    for split, n in counts.items():
        (root / split).mkdir(parents=True)
        for i in range(n):
            _picture(rng).save(root / split / f"{i}.png")


def test_train_val_layout_without_class_folders_is_one_class(tmp_path: Path) -> None:
    _split_folders(tmp_path / "data", {"train": 8, "val": 3}, seed=1)
    dm = _datamodule(tmp_path / "data", tmp_path)
    assert len(dm.train_set) == 8 and len(dm.val_set) == 3
    assert dm.class_names == ["data"] and dm.num_classes == 1
    assert set(dm.train_set.labels.tolist()) == set(dm.val_set.labels.tolist()) == {0}


def test_missing_or_empty_folder_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"is not a folder.*\.png, \.jpg"):
        scan_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no images in .*empty.*searched recursively"):
        scan_folder(tmp_path / "empty")


def test_augmentation_config(messy_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown augmentation.*hflip"):
        ImageFolderDataModule(path=str(messy_folder), augment=["flip"])
    with pytest.raises(ConfigError, match="unknown parameters"):
        ImageFolderDataModule(path=str(messy_folder), augment=[{"name": "rotate", "angle": 3}])
    dm = _datamodule(messy_folder, tmp_path, augment=["hflip", {"name": "rotate", "degrees": 5}])
    torch.manual_seed(0)
    draws = [dm.train_set[0][0] for _ in range(8)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])  # training images vary
    assert torch.equal(dm.val_set[0][0], dm.val_set[0][0])  # validation images do not


def test_quality_report_and_clean_list(tmp_path: Path) -> None:
    root = tmp_path / "shop"
    root.mkdir()
    rng = np.random.default_rng(2)
    for i in range(10):
        _picture(rng, (64, 64)).save(root / f"item{i}.png")
    shutil.copy(root / "item0.png", root / "copy_of_item0.png")  # exact duplicate
    Image.open(root / "item1.png").resize((96, 96)).save(root / "item1_big.jpg", quality=95)
    Image.new("RGB", (64, 64), (5, 5, 5)).save(root / "dark.png")  # std 0 -> blank
    dark = (np.random.default_rng(3).integers(0, 25, (64, 64, 3))).astype(np.uint8)
    Image.fromarray(dark).save(root / "night.png")
    Image.new("RGB", (64, 64), (128, 128, 128)).save(root / "grey.png")
    _picture(rng, (300, 40)).save(root / "banner.png")
    _picture(rng, (16, 16)).save(root / "thumb.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    before = {p.name: p.read_bytes() for p in root.iterdir()}
    out = tmp_path / "q"
    result = run_script(
        "-m", "genlab.data.quality", "clean", f"data.path={root}", f"hydra.run.dir={out}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    names = {k: sorted(Path(p).name for p in v) for k, v in report["flagged"].items()}
    # The first of each group (in path order) is kept, the others flagged.
    assert names["exact_duplicate"] == ["item0.png"]  # copy_of_item0.png sorts first
    assert names["near_duplicate"] == ["item1_big.jpg"]
    assert names["blank"] == ["dark.png", "grey.png"] and names["too_dark"] == ["night.png"]
    assert names["extreme_aspect"] == ["banner.png"] and names["too_small"] == ["thumb.png"]
    assert list(report["unreadable"]) == [str(root / "broken.jpg")]
    clean = (out / "clean_files.txt").read_text().split()
    assert sorted(clean) == sorted(["copy_of_item0.png"] + [f"item{i}.png" for i in range(1, 10)])
    assert (out / "flagged.png").is_file() and (out / "sizes.png").is_file()
    assert {p.name: p.read_bytes() for p in root.iterdir()} == before  # nothing touched
    dm = ImageFolderDataModule(path=str(root), file_list=str(out / "clean_files.txt"))
    dm.setup("fit")
    assert len(dm.train_set) + len(dm.val_set) == 10 and not dm.skipped


@pytest.mark.parametrize("image_size", [28, 32, 64, 128, 256])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_size_and_channel_count(
    messy_folder: Path, tmp_path: Path, image_size: int, channels: int
) -> None:
    dm = _datamodule(messy_folder, tmp_path, image_size=image_size, channels=channels)
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (4, channels, image_size, image_size)
    assert x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1 and x.std() > 0.05


@pytest.mark.parametrize("model", ["gan", "vae"])
def test_models_train_on_an_image_folder_at_64px(make_cfg, messy_folder: Path, model: str) -> None:
    from genlab.train import run

    cfg = make_cfg(
        f"model={model}", "data=image_folder", f"data.path={messy_folder}", "data.image_size=64",
        "data.num_workers=0", "data.persistent_workers=false", "data.batch_size=4",
        "data.train_fraction=1", "debug=fast",
    )  # fmt: skip
    assert run(cfg) is not None
    assert (Path(cfg.paths.output_dir) / "data_report.json").is_file()


def test_train_cli_on_an_image_folder(messy_folder: Path, tmp_path: Path) -> None:
    from .conftest import tiny_overrides

    result = run_script(
        "train.py", *tiny_overrides("gan"), "data=image_folder", f"data.path={messy_folder}",
        "data.image_size=32", "data.num_workers=0", "data.batch_size=4", "data.train_fraction=1",
        "callbacks.fid.num_real=null", "debug=limit", f"hydra.run.dir={tmp_path / 'run'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]
    assert "val/fid" in header and "train/d_loss" in header
    assert (tmp_path / "run" / "data_report.json").is_file()
    assert "skipped 4 of 34 files" in result.stdout + result.stderr


def test_image_folder_cli_errors_are_one_line(tmp_path: Path) -> None:
    cases = {
        ("train.py", "data=image_folder"): "data.path must be set",
        ("train.py", "data=image_folder", f"data.path={tmp_path / 'nope'}"): "is not a folder",
        ("-m", "genlab.data.quality", "report"): "data.path must be set",
    }
    for args, message in cases.items():
        result = run_script(*args, f"hydra.run.dir={tmp_path / 'run'}")
        assert result.returncode == 1, result.stderr[-2000:]
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("genlab: error:") and message in last, last
        if args[0] == "train.py":  # the line alone: no config tree, no Lightning banners
            assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1, result


def test_an_empty_folder_is_refused_before_anything_prints(
    make_cfg, tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    from genlab.train import run

    caplog.set_level(logging.INFO)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no image here")
    cfg = make_cfg(
        "data=image_folder", f"data.path={tmp_path / 'empty'}", "extras.print_config=true"
    )
    with pytest.raises(DataError, match=r"no images in .*empty.*searched recursively"):
        run(cfg)
    # The config tree (extras.print_config) and Lightning's banners came first before.
    assert capsys.readouterr().out == "" and not caplog.records


def test_a_tiny_validation_split_is_refused_before_training(make_cfg, tmp_path: Path) -> None:
    """20 images hold out round(0.05 * 20) = 1: FID needs 2, so the run used to train an epoch
    and then stop on 'could not find the monitored key val/fid'."""
    from genlab.train import run

    rng = np.random.default_rng(3)
    (tmp_path / "few").mkdir()
    for i in range(20):
        _picture(rng).save(tmp_path / "few" / f"{i}.png")
    cfg = make_cfg(
        "data=image_folder", f"data.path={tmp_path / 'few'}", "data.image_size=32",
        "data.num_workers=0", "data.batch_size=4", "data.train_fraction=1",
        "trainer.max_epochs=1",
    )  # fmt: skip
    with pytest.raises(DataError) as err:
        run(cfg)
    assert str(err.value) == (
        f"data.path='{tmp_path / 'few'}' leaves 1 validation image(s) and 19 for training: "
        "validation needs >= 2 (val/fid and val/kid need 2; below that the monitor is never "
        "logged). Raise data.val_fraction=0.05 to 0.08 or more (20 usable images), or add images."
    )
    assert not (Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt").exists()  # no step
    cfg.data.val_fraction = 0.08  # the suggested value holds out 2: the run trains
    cfg.paths.output_dir = str(tmp_path / "fixed")
    assert run(cfg) is not None


def test_one_image_in_val_names_the_folder(tmp_path: Path) -> None:
    import pytorch_lightning as pl

    _split_folders(tmp_path / "data", {"train": 6, "val": 1}, seed=4)
    dm = ImageFolderDataModule(path=str(tmp_path / "data"), image_size=32, batch_size=2)
    dm.trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(DataError) as err:
        dm.setup("fit")
    assert "leaves 1 validation image(s) and 6 for training" in str(err.value)
    assert str(err.value).endswith(f"Put 2 or more images into {tmp_path / 'data' / 'val'}/.")


def test_quality_report_on_demo_folder_lists_exactly_the_seeded_problems(tmp_path: Path) -> None:
    """Hundreds of similar digit images: no false duplicates, every seeded problem found."""
    import sys

    from hydra import compose, initialize_config_dir

    from genlab.data.quality import analyse

    from .conftest import CONF, ROOT

    sys.path.insert(0, str(ROOT / "scripts"))
    from make_demo_image_folder import make_folder, seed_problems

    root = tmp_path / "digits"
    files = make_folder(root, 400, 64)
    seeded = seed_problems(root, files, 64)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("quality", overrides=[f"data.path={root}", "paths.output_dir=unused"])
    report = analyse(scan_folder(root), cfg)
    assert sorted(report["unreadable"]) == sorted(seeded.pop("unreadable"))
    for kind, paths in seeded.items():
        assert sorted(report["flagged"][kind]) == sorted(paths), kind
    assert report["counts"] == {k: len(v) for k, v in report["flagged"].items()}
    assert sum(report["counts"].values()) == 8 and len(report["clean"]) == 400
    # Per class, as data=image_folder labels them: odd/ is a class none of whose files is clean.
    assert list(report["classes"]) == [*"0123456789", "odd"]
    assert report["classes"]["odd"] == {"images": 8, "clean": 0}
    assert sum(c["clean"] for c in report["classes"].values()) == 400


def test_image_size_follows_the_folder(messy_folder: Path, tmp_path: Path, make_cfg) -> None:
    from genlab.data.image_folder import infer_image_size

    assert infer_image_size(messy_folder) == 32  # 48x40 pictures: shorter side 40
    big = tmp_path / "big"
    big.mkdir()
    rng = np.random.default_rng(4)
    for i in range(5):
        _picture(rng, (160, 130)).save(big / f"{i}.jpg")
    cfg = make_cfg("data=image_folder", f"data.path={big}")
    assert cfg.data.image_size == 128 and cfg.model.generator.image_size == 128
    assert (
        make_cfg("data=image_folder", f"data.path={big}", "data.image_size=64").data.image_size
        == 64
    )

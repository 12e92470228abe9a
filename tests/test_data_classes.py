"""Labels as data: every data module declares ``num_classes`` and ``class_names``, the configs
derive them (``${dataset_classes:...}``, ``${folder_classes:...}``) so conditional models follow
the data, and a declaration that disagrees with the data is one line."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from genlab.config.validation import validate
from genlab.data.image_folder import ImageFolderDataModule, folder_classes
from genlab.data.mnist import ARRAY_DATASETS, DATASET_CLASSES, DATASETS, MNISTDataModule
from genlab.data.splits import SplitDataModule
from genlab.errors import ConfigError, DataError

from .conftest import CONF, SHIPPED
from .test_image_folder import _picture

FLOWERS = ("daisy", "rose", "tulip")


def _folder(root: Path, layout: dict[str, int], seed: int = 0) -> Path:
    """``{"rose": 4, "train/rose": 3, ".": 5}``: that many small pictures in each subfolder."""
    rng = np.random.default_rng(seed)
    for sub, n in layout.items():
        (root / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            _picture(rng, (36, 36)).save(root / sub / f"{i}.png")
    return root


@pytest.fixture
def flowers(tmp_path: Path) -> Path:
    """Three class subfolders, 5 pictures each."""
    return _folder(tmp_path / "flowers", dict.fromkeys(FLOWERS, 5))


def _setup(path: Path, **kwargs) -> ImageFolderDataModule:
    dm = ImageFolderDataModule(path=str(path), image_size=32, batch_size=2, **kwargs)
    dm.setup("fit")
    return dm


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    return message


def test_mnist_family_declares_its_classes() -> None:
    assert set(DATASET_CLASSES) == {*DATASETS, *ARRAY_DATASETS}
    assert all(len(names) == 10 for names in DATASET_CLASSES.values())
    dm = MNISTDataModule(data_dir=str(SHIPPED))
    assert dm.num_classes == 10 and dm.class_names == list("0123456789")
    overrides = {
        "data=mnist": list("0123456789"),
        "data=fashion_mnist": list(DATASET_CLASSES["fashion_mnist"]),
        "data.dataset=kmnist": ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
        "data=cifar10": [
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ],
    }
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for override, names in overrides.items():
            cfg = compose("train", overrides=["model=cgan", override])
            assert cfg.data.class_names == names and cfg.data.num_classes == 10, override
            assert cfg.model.num_classes == 10 and cfg.model.generator.num_classes == 10
    assert DATASET_CLASSES["fashion_mnist"][0] == "T-shirt/top"
    assert DATASET_CLASSES["fashion_mnist"][-1] == "Ankle boot"


def test_mnist_labels_are_checked_against_the_declaration() -> None:
    with pytest.raises(ConfigError) as err:
        MNISTDataModule(data_dir=str(SHIPPED), num_classes=5)
    assert _one_line(err).startswith("data.class_names lists 10 names but data.num_classes=5")
    with pytest.raises(ConfigError) as err:
        MNISTDataModule(data_dir=str(SHIPPED), class_names=list("abcdefghijkl"))
    assert _one_line(err).startswith("data.num_classes=12 but mnist has 10 classes: drop")
    renamed = [f"digit {i}" for i in range(10)]  # ten names of one's own: fine
    assert MNISTDataModule(data_dir=str(SHIPPED), class_names=renamed).class_names == renamed
    # What setup loads is checked too: labels outside [0, num_classes).
    base = SplitDataModule(1, 0, False, False, num_classes=5)
    assert base.class_names == ["0", "1", "2", "3", "4"]
    with pytest.raises(ConfigError) as err:
        base.check_labels(torch.tensor([0, 3, 9]), "data.dataset=mnist's training split")
    assert _one_line(err).startswith(
        "data.num_classes=5 but data.dataset=mnist's training split holds labels 0 to 9, "
        "outside [0, 5). Set data.num_classes=10 with as many data.class_names"
    )
    base.check_labels(torch.tensor([0, 4]), "fine")


def test_a_mismatched_declaration_is_one_line_at_start_up(make_cfg, flowers: Path) -> None:
    with pytest.raises(ConfigError) as err:
        validate(make_cfg("data.num_classes=5"))
    assert _one_line(err).startswith("data.class_names lists 10 names but data.num_classes=5")
    with pytest.raises(ConfigError) as err:
        validate(make_cfg("data=image_folder", f"data.path={flowers}", "data.num_classes=2"))
    assert "data.class_names lists 3 names but data.num_classes=2" in _one_line(err)
    with pytest.raises(ConfigError) as err:
        validate(make_cfg("data=image_folder", f"data.path={flowers}", "data.class_names=[a,b,c]"))
    assert _one_line(err).startswith(
        f"data.class_names has 3 classes (a, b, c) but {flowers} holds 3 (daisy, rose, tulip)"
    )
    validate(make_cfg("model=cgan", "data=image_folder", f"data.path={flowers}"))


def test_class_subfolders_are_the_classes(flowers: Path, tmp_path: Path) -> None:
    assert folder_classes(flowers) == list(FLOWERS)
    dm = _setup(flowers, val_fraction=0.2, report_dir=str(tmp_path / "report"))
    assert dm.num_classes == 3 and dm.class_names == list(FLOWERS)
    for split in (dm.train_set, dm.val_set):
        assert split.labels.dtype == torch.int64
        assert [dm.class_names[y] for y in split.labels] == [p.parent.name for p in split.files]
    _, labels = next(iter(dm.train_dataloader()))
    assert labels.dtype == torch.int64
    assert dm.images_per_class == dict.fromkeys(FLOWERS, 5)
    report = OmegaConf.load(tmp_path / "report" / "data_report.json")
    assert report.classes == list(FLOWERS) and report.images_per_class.rose == 5
    # A declaration that is not the folder's is refused at setup too, in one line.
    with pytest.raises(ConfigError) as err:
        _setup(flowers, class_names=["rose", "tulip", "lily"])
    assert "a conditional model's labels follow these names" in _one_line(err)


def test_a_flat_folder_is_one_class(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    flat = _folder(tmp_path / "cats", {".": 6})
    assert folder_classes(flat) == ["cats"]
    dm = _setup(flat, val_fraction=0.3)
    assert dm.num_classes == 1 and dm.class_names == ["cats"]
    assert set(torch.cat([dm.train_set.labels, dm.val_set.labels]).tolist()) == {0}
    # Images beside subfolders: still one class (nothing dropped), with a warning.
    _folder(flat, {"kittens": 2})
    assert folder_classes(flat) == ["cats"]
    with caplog.at_level(logging.WARNING):
        dm = _setup(flat, val_fraction=0.3)
    assert dm.class_names == ["cats"] and len(dm.train_set) + len(dm.val_set) == 8
    assert "beside its subfolders: read as one class 'cats'" in caplog.text


def test_train_val_layout_takes_train_classes(tmp_path: Path) -> None:
    root = _folder(tmp_path / "split", {"train/a": 3, "train/b": 3, "val/a": 1, "val/b": 1})
    assert folder_classes(root) == ["a", "b"]
    dm = _setup(root)
    assert dm.class_names == ["a", "b"] and dm.val_set.labels.tolist() == [0, 1]
    _folder(root, {"val/c": 1})
    with pytest.raises(DataError) as err:
        _setup(root)
    assert _one_line(err).startswith(f"{root / 'val' / 'c'}/ is a class that {root / 'train'}/")
    (root / "val" / "c" / "0.png").unlink()
    _folder(root, {"val": 1})  # an image of val/ outside the class folders
    with pytest.raises(DataError) as err:
        _setup(root)
    assert "outside the class folders" in _one_line(err)


def test_file_list_classes_are_the_listed_files(flowers: Path, tmp_path: Path) -> None:
    """A clean list that leaves out a whole folder (the demo folder's odd/) leaves its class out."""
    listed = tmp_path / "clean_files.txt"
    listed.write_text("".join(f"{c}/{i}.png\n" for c in ("daisy", "rose") for i in range(5)))
    assert folder_classes(flowers, listed) == ["daisy", "rose"]
    dm = _setup(flowers, file_list=str(listed), val_fraction=0.2)
    assert dm.class_names == ["daisy", "rose"]
    assert folder_classes(tmp_path / "missing") == [] and folder_classes(flowers, "gone") == []


def test_cgan_on_a_class_folder_needs_no_edit(
    make_cfg, flowers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import genlab.data.image_folder as image_folder

    scans = []
    scan = image_folder.folder_classes
    monkeypatch.setattr(image_folder, "folder_classes", lambda *a: scans.append(a) or scan(*a))
    cfg = make_cfg("model=cgan", "data=image_folder", f"data.path={flowers}")
    assert cfg.model.num_classes == 3 and cfg.data.class_names == list(FLOWERS)
    assert cfg.model.generator.num_classes == cfg.model.discriminator.num_classes == 3
    assert len(scans) == 1  # the folder scan is cached: read once per config


def test_cgan_trains_on_a_class_folder(make_cfg, flowers: Path) -> None:
    from genlab.train import run

    cfg = make_cfg(
        "model=cgan", "data=image_folder", f"data.path={flowers}", "data.image_size=32",
        "data.num_workers=0", "data.persistent_workers=false", "data.batch_size=4",
        "data.train_fraction=1", "data.val_fraction=0.2", "debug=fast",
    )  # fmt: skip
    assert run(cfg) is not None


def test_quality_report_counts_images_per_class(
    flowers: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from genlab.data.quality import run

    (flowers / "rose" / "broken.png").write_bytes(b"not a picture")
    (flowers / "tulip" / "copy.png").write_bytes((flowers / "tulip" / "0.png").read_bytes())
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "quality", overrides=[f"data.path={flowers}", f"paths.output_dir={tmp_path / 'q'}"]
        )
    report = run(cfg, "report")
    assert report["classes"] == {
        "daisy": {"images": 5, "clean": 5},
        "rose": {"images": 5, "clean": 5},  # the broken file is not an image of the class
        "tulip": {"images": 6, "clean": 5},  # one of the two copies is flagged
    }
    assert "3 classes, clean images per class: daisy 5, rose 5, tulip 5" in capsys.readouterr().out
    saved = OmegaConf.load(tmp_path / "q" / "report.json")
    assert saved.classes.tulip.images == 6

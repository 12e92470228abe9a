"""genlab/loggers/: one adapter per logger kind, and the callbacks and finishing a run's loggers
add. (Whole runs with each logger: tests/test_train.py, test_wandb.py,
test_runtime_adaptations.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger, WandbLogger

from genlab.checkpoints.keys import WANDB_ID_KEY
from genlab.loggers.adapters import (
    CSVAdapter,
    LoggerAdapter,
    TensorBoardAdapter,
    WandbAdapter,
    adapter,
    adapter_for_config,
)
from genlab.loggers.metrics_csv import MetricsCheckpointSync, ResumableCSVLogger
from genlab.loggers.run import ResumeIdsInCheckpoint, finishing, with_logger_callbacks


class MyWandb(WandbLogger):
    """A lab's own W&B logger: still W&B to genlab."""


def test_each_logger_gets_its_adapter(tmp_path: Path) -> None:
    assert type(adapter(ResumableCSVLogger(tmp_path))) is CSVAdapter
    assert type(adapter(TensorBoardLogger(tmp_path))) is TensorBoardAdapter
    assert type(adapter(WandbLogger(save_dir=str(tmp_path), mode="offline"))) is WandbAdapter
    assert type(adapter(MyWandb(save_dir=str(tmp_path), mode="offline"))) is WandbAdapter
    assert type(adapter(CSVLogger(tmp_path))) is LoggerAdapter  # unknown: the plain adapter
    # From a config, before anything is built; a target that does not import gets the plain
    # adapter (instantiating it then reports the problem).
    node = OmegaConf.create({"_target_": "pytorch_lightning.loggers.WandbLogger"})
    assert adapter_for_config(node) is WandbAdapter
    node = OmegaConf.create({"_target_": "genlab.loggers.metrics_csv.ResumableCSVLogger"})
    assert adapter_for_config(node) is CSVAdapter
    assert adapter_for_config(OmegaConf.create({"_target_": "no.such.Logger"})) is LoggerAdapter


def test_a_logger_without_an_adapter_is_left_alone(tmp_path: Path) -> None:
    """Lightning's own CSVLogger: no images, no resume id, nothing to finish, no arguments."""
    plain = adapter(CSVLogger(tmp_path))
    plain.log_images("samples", torch.rand(3, 8, 8), "epoch 0", 0)
    checkpoint: dict = {}
    plain.save_resume_id(checkpoint)
    plain.finish(failed=True)
    assert checkpoint == {}
    assert not list(tmp_path.rglob("*"))  # nothing written for it
    node = OmegaConf.create({"_target_": "pytorch_lightning.loggers.CSVLogger"})
    assert LoggerAdapter.build_kwargs(node, {"epoch": 3}, "last.ckpt") == {}


def test_build_arguments_for_a_resumed_run() -> None:
    checkpoint = {WANDB_ID_KEY: "abc123"}
    csv = OmegaConf.create({"_target_": "genlab.loggers.metrics_csv.ResumableCSVLogger"})
    assert CSVAdapter.build_kwargs(csv, checkpoint, "last.ckpt") == {"append": True}
    assert CSVAdapter.build_kwargs(csv, None, None) == {"append": False}
    wandb = OmegaConf.create({"mode": "offline", "id": None})
    resumed = {"id": "abc123", "resume": "allow"}
    assert WandbAdapter.build_kwargs(wandb, checkpoint, "last.ckpt") == resumed
    assert WandbAdapter.build_kwargs(wandb, None, None) == {}
    assert WandbAdapter.build_kwargs(wandb, {}, "old.ckpt") == {}  # a checkpoint without an id
    wandb.id = "mine"  # an id the user set wins over the checkpoint's
    assert WandbAdapter.build_kwargs(wandb, checkpoint, "last.ckpt") == {}


def test_wandb_run_id_goes_into_checkpoints(tmp_path: Path) -> None:
    logger = WandbLogger(save_dir=str(tmp_path), mode="offline", id="run42")
    checkpoint: dict = {}
    adapter(logger).save_resume_id(checkpoint)
    assert checkpoint == {WANDB_ID_KEY: "run42"}


def test_finishing_marks_a_raising_block_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    finished: list[bool] = []
    monkeypatch.setattr(WandbAdapter, "finish", lambda self, failed: finished.append(failed))
    logger = WandbLogger(mode="offline")
    with finishing([logger]):
        pass
    with pytest.raises(KeyboardInterrupt), finishing([logger]):
        raise KeyboardInterrupt
    assert finished == [False, True]


def test_logger_callbacks(tmp_path: Path) -> None:
    lr_monitor, checkpoint = LearningRateMonitor(), ModelCheckpoint()
    added = with_logger_callbacks([lr_monitor, checkpoint], [ResumableCSVLogger(tmp_path)])
    assert added[:2] == [lr_monitor, checkpoint]
    assert [type(c) for c in added[2:]] == [ResumeIdsInCheckpoint, MetricsCheckpointSync]
    # logger=none: LearningRateMonitor would refuse to run, so it goes; the others stay.
    alone = with_logger_callbacks([lr_monitor, checkpoint], [])
    assert lr_monitor not in alone and checkpoint in alone

"""One adapter per logger kind: what a run asks of a logger beyond Lightning's ``Logger`` API.

Image grids, the id that lets a resumed run continue the logger's own run, the arguments a
logger is built with for this run (offline W&B, a continued metrics.csv) and finishing. The
rest of genlab calls ``adapter(logger)`` and never asks which logger it holds; a new logger
kind gets a subclass of ``LoggerAdapter`` here and an entry in ``_ADAPTERS``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from hydra.utils import get_class
from omegaconf import DictConfig
from pytorch_lightning.loggers import Logger, TensorBoardLogger, WandbLogger

from genlab.checkpoints.keys import WANDB_ID_KEY
from genlab.loggers.metrics_csv import ResumableCSVLogger
from genlab.loggers.wandb_offline import offline_overrides

log = logging.getLogger(__name__)


class LoggerAdapter:
    """A logger genlab has no adapter for (MLflow, Comet, Lightning's CSVLogger ...): it gets
    the metrics and hyperparameters through Lightning, and nothing else is asked of it (the
    sample grids stay PNGs in the run folder; a resumed run starts a new run of its own)."""

    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    @classmethod
    def build_kwargs(
        cls, config: DictConfig, checkpoint: dict | None, ckpt_path: str | None
    ) -> dict[str, Any]:
        """Arguments that adapt the logger built from ``config`` to this run (resumed from
        ``checkpoint`` read at ``ckpt_path``, or None). Given to the constructor, never
        written into ``config``: the config stored in checkpoints stays what the user asked."""
        return {}

    def log_images(self, key: str, grid: torch.Tensor, caption: str, step: int) -> None:
        """Log one image grid (CHW floats in [0, 1]) under ``key``, e.g. the epoch's samples,
        with ``caption`` (the epoch; a conditional model's grids name the classes of its rows)."""

    def save_resume_id(self, checkpoint: dict[str, Any]) -> None:
        """Store in ``checkpoint`` what a run resumed from it needs to continue this logger's
        run (read back by ``build_kwargs``)."""

    def finish(self, failed: bool) -> None:
        """Close the logger's run when the task ends; ``failed``: it ended by an exception."""


class CSVAdapter(LoggerAdapter):
    """``metrics.csv``: a resumed run continues the file rather than replacing it."""

    @classmethod
    def build_kwargs(
        cls, config: DictConfig, checkpoint: dict | None, ckpt_path: str | None
    ) -> dict[str, Any]:
        return {"append": checkpoint is not None}


class TensorBoardAdapter(LoggerAdapter):
    def log_images(self, key: str, grid: torch.Tensor, caption: str, step: int) -> None:
        self.logger.experiment.add_image(key, grid, global_step=step)
        # TensorBoard's images carry no caption: it goes beside them, in the TEXT tab (a tag
        # of its own, one plugin per tag), at the same step.
        self.logger.experiment.add_text(f"{key}/caption", caption, global_step=step)


class WandbAdapter(LoggerAdapter):
    """Weights & Biases: offline without network, one W&B run across resumes, images with
    captions, and a finished run per task (W&B keeps one run per process)."""

    @classmethod
    def build_kwargs(
        cls, config: DictConfig, checkpoint: dict | None, ckpt_path: str | None
    ) -> dict[str, Any]:
        kwargs = offline_overrides(config)
        run_id = checkpoint.get(WANDB_ID_KEY) if checkpoint is not None else None
        if run_id and not config.get("id"):  # an id the user set wins
            log.info("resuming W&B run %s from %s", run_id, ckpt_path)
            kwargs.update(id=run_id, resume="allow")
        return kwargs

    def log_images(self, key: str, grid: torch.Tensor, caption: str, step: int) -> None:
        hwc = (grid.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        # No step=: WandbLogger plots against its own trainer/global_step key, and an explicit
        # W&B step ahead of the metrics' would make W&B drop later metrics.
        self.logger.log_image(key=key, images=[hwc], caption=[caption])

    def save_resume_id(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[WANDB_ID_KEY] = self.logger.version

    def finish(self, failed: bool) -> None:
        # The next multirun job gets a run of its own, and a crashed (e.g. diverged) run is
        # marked failed rather than finished.
        self.logger.experiment.finish(exit_code=int(failed))


# Most specific first: a subclass of a listed logger gets that logger's adapter.
_ADAPTERS: list[tuple[type[Logger], type[LoggerAdapter]]] = [
    (ResumableCSVLogger, CSVAdapter),
    (WandbLogger, WandbAdapter),
    (TensorBoardLogger, TensorBoardAdapter),
]


def adapter_class(logger_class: type) -> type[LoggerAdapter]:
    """The adapter for loggers of ``logger_class``; ``LoggerAdapter`` for unknown ones."""
    for kind, adapter_type in _ADAPTERS:
        if issubclass(logger_class, kind):
            return adapter_type
    return LoggerAdapter


def adapter(logger: Logger) -> LoggerAdapter:
    """``logger`` behind the interface genlab uses beyond Lightning's."""
    return adapter_class(type(logger))(logger)


def adapter_for_config(config: DictConfig) -> type[LoggerAdapter]:
    """The adapter for the logger ``config`` builds (by its ``_target_``). A target that does
    not import gets the plain adapter: building it reports the problem."""
    try:
        return adapter_class(get_class(config["_target_"]))
    except (ImportError, ValueError):
        return LoggerAdapter

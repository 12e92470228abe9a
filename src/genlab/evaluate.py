"""``genlab.evaluate.run``: test metrics of a checkpoint.

    python eval.py ckpt_path=outputs/train/runs/<time>/checkpoints/last.ckpt

Rebuilds the model and (unless ``data=...`` is given) the data module from the checkpoint's
stored config, runs ``trainer.test`` and writes ``metrics.json`` into the eval run directory.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from genlab.utils.checkpoint import load_model
from genlab.utils.config import check_accelerator, instantiate_group

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, float]:
    check_accelerator(cfg.trainer)
    model, train_cfg = load_model(cfg.ckpt_path)
    data_cfg = train_cfg.data
    if cfg.get("data"):  # data=... : another set, at the resolution/channels the model needs
        shape = {k: train_cfg.data[k] for k in ("image_size", "channels")}
        data_cfg = OmegaConf.merge(OmegaConf.to_container(cfg.data, resolve=True), shape)
    elif not Path(data_cfg.get("data_dir", ".")).exists():  # checkpoint from another machine
        data_cfg.data_dir = cfg.paths.data_dir
    datamodule = instantiate_group(OmegaConf.create({"data": data_cfg}), "data")
    trainer: pl.Trainer = instantiate_group(cfg, "trainer", logger=False, callbacks=[])
    pl.seed_everything(cfg.seed, workers=True)
    (results,) = trainer.test(model, datamodule=datamodule, verbose=True)
    metrics = {k: float(v) for k, v in results.items()}
    report = Path(cfg.paths.output_dir) / "metrics.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps({"ckpt_path": str(cfg.ckpt_path), "metrics": metrics}, indent=2))
    log.info("wrote %s", report)
    return metrics

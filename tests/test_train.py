"""Every model x logger composes from the real configs and trains end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genlab.errors import ConfigError
from genlab.train import run
from tests.conftest import CONF

LOGGER_OUTPUTS = {
    "csv": ["csv"],
    "wandb": ["wandb"],
    "tensorboard": ["tensorboard"],
    "many": ["csv", "wandb", "tensorboard"],
    "none": [],
}


@pytest.mark.parametrize("logger", list(LOGGER_OUTPUTS))
@pytest.mark.parametrize("model", ["gan", "vae"])
def test_every_model_with_every_logger(make_cfg, model: str, logger: str) -> None:
    # debug=limit, not fast_dev_run: fast_dev_run swaps every logger for a dummy.
    cfg = make_cfg(f"model={model}", f"logger={logger}", "debug=limit")
    score = run(cfg)
    assert score is not None and torch.isfinite(torch.tensor(score))
    out, monitor = Path(cfg.paths.output_dir), cfg.model.monitor
    assert (out / "checkpoints" / "last.ckpt").exists()
    expected = LOGGER_OUTPUTS[logger]
    assert (out / "metrics.csv").exists() == ("csv" in expected)
    if "csv" in expected:
        assert monitor in (out / "metrics.csv").read_text().splitlines()[0]
    if "tensorboard" in expected:
        events = b"".join(p.read_bytes() for p in (out / "tensorboard").rglob("events.out.*"))
        assert monitor.encode() in events and b"\x89PNG" in events  # scalars and sample grids
    wandb_runs = list((out / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == ("wandb" in expected)
    if wandb_runs:
        assert list((wandb_runs[0] / "files" / "media" / "images").glob("samples_*.png"))


def test_fast_dev_run(make_cfg) -> None:
    assert run(make_cfg("model=gan", "debug=fast")) is not None


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_experiments_compose_and_run(make_cfg, experiment: str, tmp_path: Path) -> None:
    overrides = [f"experiment={experiment}", "debug=fast", "trainer=cpu"]
    if experiment.endswith("px"):  # image-folder recipes: a small folder of digits
        import sys

        sys.path.insert(0, str(CONF.parent / "scripts"))
        from make_demo_image_folder import make_folder

        make_folder(tmp_path / "images", 40, 64)
        overrides += [f"data.path={tmp_path / 'images'}", "data.num_workers=0",
                      "data.persistent_workers=false", "data.batch_size=16"]  # fmt: skip
    cfg = make_cfg(*overrides, tiny=False)
    cfg.data.train_fraction = 0.01 if "px" not in experiment else 1.0
    cfg.callbacks.progress_bar = None
    assert run(cfg) is not None


def test_short_run_writes_checkpoints_samples_and_metrics(make_cfg) -> None:
    cfg = make_cfg("model=vae", "debug=limit")
    score = run(cfg)
    out = Path(cfg.paths.output_dir)
    assert (out / "checkpoints" / "last.ckpt").exists()
    assert len(list((out / "checkpoints").glob("epoch*.ckpt"))) == 1  # best on val/elbo
    for png in ("samples_epoch=000.png", "samples_epoch=001.png", "recon_last.png"):
        assert (out / "samples" / png).stat().st_size > 0, png
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    for key in ("train/elbo", "train/kl", "val/elbo", "val/kl", "val/recon", "test/elbo"):
        assert key in header, key
    assert score < 0  # an ELBO in nats per image is negative


def test_gpu_trainer_without_gpu_fails_before_loading_data(make_cfg, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = make_cfg("model=vae", "trainer=gpu", "data.data_dir=/nonexistent")
    with pytest.raises(
        ConfigError, match=r"trainer\.accelerator=gpu but this machine has no usable CUDA GPU"
    ):
        run(cfg)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.loss=wgan", r"model.loss='wgan' is unknown: choose one of"),
        ("data.train_fraction=1.5", r"data.train_fraction=1.5 must be in \(0, 1\]"),
        ("+model.latent_size=3", r"unexpected keyword argument 'latent_size'"),
    ],
)
def test_bad_values_become_one_line_config_errors(make_cfg, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        run(make_cfg(override))


@pytest.mark.parametrize(
    "scheduler",
    [
        "{_target_:torch.optim.lr_scheduler.StepLR,_partial_:true,step_size:1,gamma:0.5}",
        # mode=min on a rising ELBO: every epoch after the first looks worse, so the LR drops.
        "{_target_:torch.optim.lr_scheduler.ReduceLROnPlateau,_partial_:true,mode:min,patience:0}",
    ],
)
def test_schedulers_step_once_per_epoch(make_cfg, scheduler: str) -> None:
    cfg = make_cfg(
        "model=vae", "debug=limit", "trainer.max_epochs=3", f"model.scheduler={scheduler}"
    )
    run(cfg)
    header, *rows = (Path(cfg.paths.output_dir) / "metrics.csv").read_text().splitlines()
    column = header.split(",").index("lr-Adam")
    lrs = [float(r.split(",")[column]) for r in rows if r.split(",")[column]]
    assert lrs[0] == pytest.approx(1e-3) and len(lrs) == 3
    if "StepLR" in scheduler:
        assert lrs == pytest.approx([1e-3, 5e-4, 2.5e-4])
    else:
        assert lrs == pytest.approx([1e-3, 1e-3, 1e-4])  # the scheduler saw val/elbo

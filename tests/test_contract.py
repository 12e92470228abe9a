"""The model contract (docs/models.md), checked for every config in conf/model/.

A model added to conf/model/ — genlab's or a researcher's own, wherever its class lives — is
tested here without a new test: it passes the pre-flight check (genlab.models.contract), trains
with the default callbacks and logs its monitor and the metrics it declares, samples seeded
images of the right shape and range, survives a checkpoint round trip, resumes bit-exactly, and
``eval.py`` scores its checkpoint.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, open_dict

from genlab.checkpoints.load import load_model
from genlab.evaluate import model_metrics
from genlab.evaluate import run as evaluate
from genlab.metrics.sampling import draw
from genlab.models.contract import check_contract, declared_metrics
from genlab.resume.command import resume_config
from genlab.train import callback_metrics, run
from tests.conftest import CONF, tiny_overrides

MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
# Two short epochs, a validation (and so the FID monitor) after each, a loss row per batch.
SHORT = [
    "trainer.max_epochs=2",
    "++trainer.limit_train_batches=3",
    "++trainer.limit_val_batches=1",
    "++trainer.log_every_n_steps=1",
    "test=false",
]


def _compose(config_name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def _overrides(model: str) -> list[str]:
    return [*tiny_overrides(model), *SHORT]


@pytest.fixture(scope="module", params=MODELS)
def trained(request, tmp_path_factory) -> tuple[str, Path]:
    """(model, the run directory of two uninterrupted epochs with the default callbacks)."""
    model = request.param
    run_dir = tmp_path_factory.mktemp(f"contract_{model}")
    run(_compose("train", _overrides(model), run_dir))
    return model, run_dir


@pytest.mark.parametrize("model", MODELS)
def test_passes_the_preflight_check(model: str, tmp_path: Path) -> None:
    """What train.py checks before loading data, here without training: seeded samples of the
    data's shape in [0, 1], a monitor it or a callback logs, no RNG that resume would miss."""
    cfg = _compose("train", _overrides(model), tmp_path)
    check_contract(
        instantiate(cfg.model),
        monitor=cfg.model.monitor,
        channels=cfg.data.channels,
        image_size=cfg.data.image_size,
        callback_metrics=callback_metrics(cfg),
        num_classes=cfg.data.get("num_classes"),
    )


def test_declares_the_metrics_it_logs(trained) -> None:
    """``logged_metrics`` (what model.monitor may name) is what training and validation log:
    each logged metric declared, each declared validation metric logged (a training metric may
    wait for a later batch than these short epochs reach: n_critic=5's generator loss)."""
    _, run_dir = trained
    model, cfg = load_model(run_dir / "checkpoints" / "last.ckpt")
    declared = declared_metrics(model)
    assert declared is not None, f"{type(model).__name__} declares no logged_metrics"
    metrics = json.loads((run_dir / "result.json").read_text())["metrics"]
    logged = {k for k in metrics if k.startswith(("train/", "val/"))} - set(callback_metrics(cfg))
    assert logged <= declared, f"logged but not declared: {sorted(logged - declared)}"
    unlogged = {m for m in declared - logged if m.startswith("val/")}
    assert not unlogged, f"declared but never logged: {sorted(unlogged)}"


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def test_trains_and_logs_its_monitor(trained) -> None:
    _, run_dir = trained
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "ok"
    monitor = result["monitor"]
    assert monitor in result["metrics"], f"{monitor} never logged: {sorted(result['metrics'])}"
    assert math.isfinite(result["best_score"])
    assert Path(result["best_model_path"]).is_file()
    assert (run_dir / "samples" / "samples_last.png").is_file()


def test_samples_are_seeded_images_in_range(trained) -> None:
    _, run_dir = trained
    model, cfg = load_model(run_dir / "checkpoints" / "last.ckpt")
    shape = (cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
    a, b = draw(model, 6, seed=1, batch_size=4), draw(model, 6, seed=1, batch_size=4)
    assert a.shape == (6, *shape) and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # the same seed, the same images
    assert not torch.equal(a, draw(model, 6, seed=2, batch_size=4))
    direct = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert direct.shape == (3, *shape) and direct.min() >= 0 and direct.max() <= 1


def test_checkpoint_round_trip_keeps_every_sample(trained) -> None:
    """Everything sampling depends on (weights, buffers, an EMA copy) is in the state dict."""
    _, run_dir = trained
    model, cfg = load_model(run_dir / "checkpoints" / "last.ckpt")
    fresh = instantiate(cfg.model)
    fresh.load_state_dict(model.state_dict())
    fresh.eval()
    torch.testing.assert_close(
        draw(fresh, 4, seed=0, batch_size=4), draw(model, 4, seed=0, batch_size=4), rtol=0, atol=0
    )


def test_resume_after_an_epoch_is_bit_exact(trained, tmp_path: Path) -> None:
    """Stopped (SIGTERM) after the first epoch's last batch of the same 2-epoch run, so that
    schedules sized by trainer.max_epochs (the default GAN's cosine decay) are the same run."""
    model, straight = trained
    stop_after_first_epoch = [
        "+callbacks.sigterm._target_=tests.fault_injection.SignalAt",
        "+callbacks.sigterm.epoch=0",
        "+callbacks.sigterm.batch=2",  # SHORT's last batch
    ]
    half = _compose("train", [*_overrides(model), *stop_after_first_epoch], tmp_path / "half")
    with pytest.raises(SystemExit) as stop:
        run(half)
    assert stop.value.code == 143
    resumed = resume_config(
        _compose("train", [f"resume={tmp_path / 'half'}"], tmp_path / "unused"), []
    )
    run(resumed)
    a, b = _weights(straight), _weights(tmp_path / "half")
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"weights differ after resume: {different[:5]}"


def test_eval_scores_its_checkpoint(trained, tmp_path: Path) -> None:
    _, run_dir = trained
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    cfg = _compose(
        "eval",
        [
            f"ckpt_path={checkpoint}",
            "metrics=[fid,pr,model]",
            "num_samples=64",
            "batch_size=32",
            "nll_samples=4",
            "trainer=cpu",
            "++trainer.limit_test_batches=2",
            "extras.print_config=false",
        ],
        tmp_path,
    )
    results = evaluate(cfg)
    assert math.isfinite(results["test/fid"]) and 0 <= results["test/precision"] <= 1
    model, _ = load_model(checkpoint)
    sample_keys = {"test/fid", "test/precision", "test/recall"}
    if model_metrics(model):  # the model's test_step ran and logged its own metrics
        assert set(results) - sample_keys, f"no model metrics among {sorted(results)}"
    assert all(math.isfinite(v) for v in results.values())
    assert json.loads((tmp_path / "metrics.json").read_text())["metrics"] == results


def test_every_model_config_declares_its_monitor() -> None:
    """Checkpointing, early stopping and sweeps read model.monitor/monitor_mode from the
    config; the class declares the same defaults."""
    for model in MODELS:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name="train", overrides=[f"model={model}"]).model
        assert cfg.get("monitor") and cfg.get("monitor_mode") in ("min", "max"), model
        cls = get_class(cfg._target_)
        assert getattr(cls, "monitor_mode", cfg.monitor_mode) in ("min", "max"), model

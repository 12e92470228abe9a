"""W&B offline: no account, no network, and a run directory that `wandb sync` can upload."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from genlab.train import run


def test_offline_run_holds_metrics_images_and_config(make_cfg) -> None:
    cfg = make_cfg("model=vae", "logger=wandb", "debug=limit", "logger.wandb.tags=[test]")
    run(cfg)
    runs = list((Path(cfg.paths.output_dir) / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    offline = runs[0]
    history = next(offline.glob("run-*.wandb")).read_bytes()
    # Keys that are in no config value, so only the logged history can contain them.
    for key in (b"train/elbo", b"train/kl", b"val/kl", b"test/elbo"):
        assert key in history, key
    images = list((offline / "files" / "media" / "images").glob("*.png"))
    assert any(p.name.startswith("samples") for p in images), images
    assert any(p.name.startswith("reconstructions") for p in images), images
    # The resolved Hydra config travels in the run record (W&B writes config.yaml on sync).
    assert b"genlab.models.vae.VAE" in history and b"latent_dim" in history


def test_resuming_a_checkpoint_continues_the_same_wandb_run(make_cfg, tmp_path: Path) -> None:
    first = make_cfg("logger=wandb", "debug=limit", "trainer.max_epochs=1")
    run(first)
    (offline,) = (Path(first.paths.output_dir) / "wandb").glob("offline-run-*")
    run_id = offline.name.rsplit("-", 1)[1]
    checkpoint = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"

    second = make_cfg("logger=wandb", "debug=limit", f"ckpt_path={checkpoint}")
    second.paths.output_dir = str(tmp_path / "resumed")
    run(second)
    (resumed,) = (tmp_path / "resumed" / "wandb").glob("offline-run-*")
    assert resumed.name.rsplit("-", 1)[1] == run_id
    # The run id is given to the logger being built, never written into the config.
    assert second.logger.wandb.get("id") is None


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({}, "no W&B credentials"),
        # A key but a server that refuses connections (nothing listens on port 9 here).
        ({"WANDB_API_KEY": "x" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9"}, "cannot reach"),
    ],
)
def test_online_wandb_without_key_or_network_falls_back_to_offline(
    make_cfg, monkeypatch, tmp_path: Path, caplog, env: dict, reason: str
) -> None:
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cfg = make_cfg("logger=wandb", "debug=fast", "test=false")
    start = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="genlab"):
        run(cfg)
    assert time.perf_counter() - start < 120  # never the 90 s wandb.init timeout + a hang
    warnings = [r.getMessage() for r in caplog.records if "logging offline" in r.getMessage()]
    assert len(warnings) == 1 and reason in warnings[0], warnings
    assert list((Path(cfg.paths.output_dir) / "wandb").glob("offline-run-*"))

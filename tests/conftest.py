"""Shared fixtures: compose the real configs with Hydra's compose API, shrunk to CPU-test size."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

import genlab  # noqa: F401  (registers resolvers)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SHIPPED = ROOT / "data"  # the MNIST files the repo ships

# Tiny nets and few batches: the whole suite must fit in minutes on 2 CPU cores.
TINY = [
    "data.batch_size=16",
    "data.train_fraction=0.01",
    "data.num_workers=0",
    "extras.print_config=false",
    "callbacks.progress_bar=null",
    "callbacks.fid.num_samples=64",
    "callbacks.fid.test_num_samples=64",
    "callbacks.fid.num_real=256",
    "trainer=cpu",
]
TINY_NETS = {
    "gan": ["model.generator.width=8", "model.discriminator.width=8", "model.latent_dim=8"],
    "vae": [
        "model.encoder.width=8",
        "model.decoder.width=8",
        "model.latent_dim=4",
        "model.iwae_samples_test=20",
    ],
    "vaegan": [
        "model.encoder.width=8",
        "model.decoder.width=8",
        "model.discriminator.width=8",
        "model.latent_dim=4",
    ],
}


# One short tiny GAN epoch per job: for tests of the run machinery (sweeps, notebooks).
JOB_TINY = [*TINY, *TINY_NETS["gan"], "debug=limit", "trainer.max_epochs=1"]


@pytest.fixture(scope="session", autouse=True)
def _feature_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """One cache of real features per test session (shared with subprocesses), never the
    developer's own .cache/."""
    os.environ["GENLAB_CACHE_DIR"] = str(tmp_path_factory.mktemp("feature_cache"))


@pytest.fixture(autouse=True)
def _offline_wandb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


@functools.cache  # one compose per model config for the whole suite
def tiny_nets(model: str) -> tuple[str, ...]:
    """Overrides that shrink ``conf/model/<model>.yaml``'s nets, by the family its class belongs
    to (wgan_gp, hinge_gan, ... share the GAN's nets; beta_vae the VAE's). Any other model (a
    researcher's own) runs as its config says, so keep a new model's defaults cheap."""
    from hydra.utils import get_class

    from genlab.models.gan import GAN
    from genlab.models.vae import VAE
    from genlab.models.vaegan import VAEGAN

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        target = get_class(
            compose(config_name="train", overrides=[f"model={model}"]).model._target_
        )
    for family, cls in (("vaegan", VAEGAN), ("gan", GAN), ("vae", VAE)):
        if issubclass(target, cls):
            return tuple(TINY_NETS[family])
    return ()


def tiny_overrides(model: str = "gan") -> list[str]:
    return [f"model={model}", *TINY, *tiny_nets(model)]


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """``make_cfg("model=vae", ...)`` -> a composed train config writing under ``tmp_path``."""

    def _make(*overrides: str, config_name: str = "train", tiny: bool = True) -> DictConfig:
        model = next((o.split("=", 1)[1] for o in overrides if o.startswith("model=")), "gan")
        extra = tiny_overrides(model) if tiny and config_name == "train" else []
        if any(o.startswith("trainer=") for o in overrides):  # the test picks the accelerator
            extra = [o for o in extra if o != "trainer=cpu"]
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=[*extra, *overrides])
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "run")
        return cfg

    return _make


def run_script(
    script: str, *args: str, cwd: Path = ROOT, timeout: int = 300
) -> subprocess.CompletedProcess:
    """Run an entry point as a user would (a fresh process) and capture its output."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        # "train.py" -> the repo's script; "-m" -> a module (``run_script("-m", "pkg.mod")``)
        [sys.executable, script if script.startswith("-") else str(ROOT / script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )

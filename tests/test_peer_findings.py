"""Regression tests for reviewed fixes: float64 training end to end, a config composed with its
``hydra`` node, and automatic-optimisation trainer options refused with one line."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from genlab.checkpoints.keys import CONFIG_KEY
from genlab.checkpoints.load import load_model
from genlab.metrics.sampling import draw
from genlab.train import run
from tests.conftest import CONF, run_script, tiny_overrides

ONE_SHORT_EPOCH = ["debug=limit", "trainer.max_epochs=1"]


def _logged(run_dir: Path, key: str) -> list[float]:
    with open(run_dir / "metrics.csv") as f:
        return [float(row[key]) for row in csv.DictReader(f) if row.get(key)]


def _assert_float64_weights(ckpt: Path) -> None:
    # Proof that precision=64 took effect: otherwise the tests below prove nothing about it.
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    floats = [v for v in state.values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float64 for v in floats)


def _assert_draws_float32_in_unit_range(ckpt: Path) -> None:
    model, _ = load_model(ckpt)
    for m in (model, model.double()):  # as loaded, and in the precision it trained in
        images = draw(m, 10, seed=0, batch_size=4)
        assert images.dtype == torch.float32 and images.shape[0] == 10
        assert images.isfinite().all() and images.min() >= 0 and images.max() <= 1


def test_gan_trains_validates_samples_and_scores_in_float64(make_cfg) -> None:
    # Default callbacks: the FID callback scores float64 samples (val/fid, then test/*).
    cfg = make_cfg("trainer.precision=64", *ONE_SHORT_EPOCH)
    assert cfg.callbacks.fid is not None
    score = run(cfg)
    assert score is not None and math.isfinite(score)  # the best val/fid, the GAN's monitor
    run_dir = Path(cfg.paths.output_dir)
    fids = _logged(run_dir, "val/fid")
    assert fids and all(math.isfinite(v) for v in fids)
    result = json.loads((run_dir / "result.json").read_text())
    assert math.isfinite(result["metrics"]["test/fid"])
    best = Path(result["best_model_path"])
    _assert_float64_weights(best)
    _assert_draws_float32_in_unit_range(best)


def test_vae_iwae_bound_in_float64(make_cfg) -> None:
    cfg = make_cfg("model=vae", "trainer.precision=64", *ONE_SHORT_EPOCH)
    score = run(cfg)
    assert score is not None and math.isfinite(score)  # val/elbo
    run_dir = Path(cfg.paths.output_dir)
    metrics = json.loads((run_dir / "result.json").read_text())["metrics"]
    # The importance-weighted bound, on validation and on the test split.
    for key in ("val/nll_nats", "test/nll_nats", "test/bits_per_dim", "test/fid"):
        assert math.isfinite(metrics[key]), (key, metrics.get(key))
    # The reconstruction grid feeds float32 validation images to the float64 model.
    assert (run_dir / "samples" / "recon_last.png").stat().st_size > 0
    last = run_dir / "checkpoints" / "last.ckpt"
    _assert_float64_weights(last)
    _assert_draws_float32_in_unit_range(last)


def test_run_accepts_a_config_composed_with_its_hydra_node(tmp_path: Path) -> None:
    """Notebooks and scripts may compose with return_hydra_config=True: the hydra node must
    neither break the run nor end up in checkpoints (it holds this machine's paths and argv)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[*tiny_overrides("vae"), *ONE_SHORT_EPOCH, "test=false"],
            return_hydra_config=True,
        )
    assert "hydra" in cfg
    with open_dict(cfg):
        # ${hydra:runtime.output_dir} needs a running Hydra app; compose has none.
        cfg.paths.output_dir = str(tmp_path / "run")
    score = run(cfg)
    assert score is not None and math.isfinite(score)
    ckpt = torch.load(
        tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )
    stored = ckpt[CONFIG_KEY]
    assert "hydra" not in stored
    assert stored["model"]["_target_"] == "genlab.models.vae.VAE"  # the rest of it is there
    hparams = (tmp_path / "run" / "hparams.yaml").read_text()
    assert "\nhydra:" not in f"\n{hparams}" and "model:" in hparams


AUTOMATIC_ONLY = [
    # `++` sets the key whether or not conf/trainer/ declares it.
    (["++trainer.accumulate_grad_batches=2"], "trainer.accumulate_grad_batches", "batch_size"),
    (["+trainer.gradient_clip_val=1.0"], "trainer.gradient_clip_val", "model.gradient_clip_val"),
    # conf/trainer/default.yaml declares it, so the plain override reaches genlab's check.
    (["trainer.accumulate_grad_batches=2"], "trainer.accumulate_grad_batches", "batch_size"),
]


@pytest.mark.parametrize(("overrides", "option", "fix"), AUTOMATIC_ONLY)
def test_automatic_optimization_options_are_one_line(
    tmp_path: Path, overrides: list[str], option: str, fix: str
) -> None:
    # Refused at start-up, before any data is loaded: a fresh process takes seconds.
    result = run_script(
        "train.py", *tiny_overrides(), *overrides, f"hydra.run.dir={tmp_path}", timeout=120
    )
    assert result.returncode == 1, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("genlab: error: ") and option in lines[0], lines[0]
    assert fix in lines[0], lines[0]
    # Refused before training: no checkpoint was written.
    assert not (tmp_path / "checkpoints").exists()

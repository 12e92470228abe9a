"""Each user mistake gets one clear, actionable error before any training (docs/troubleshooting.md:
Troubleshooting lists the same cases). The trainer=gpu, missing-MNIST, unknown-option and
empty-folder cases run as fresh processes in test_cli.py / test_image_folder.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException, MissingConfigException

from genlab.errors import CheckpointError, ConfigError
from genlab.train import run
from tests.conftest import run_script, tiny_overrides


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # wrong type: named with the type the constructor wants
        (["data.batch_size=abc"], r"data.batch_size='abc' \(str\): .*MNISTDataModule needs int"),
        (["trainer.max_epochs=five"], r"trainer.max_epochs='five' .* needs int or null"),
        (["model.optimizer.lr=fast"], r"model.optimizer.lr='fast' .*Adam needs float"),
        # an image size the conv nets cannot build
        (["data.image_size=48"], r"image_size=48 is not supported .* use 28 or 4\*2\*\*k"),
        # nets built for other images than the data gives
        (["model.generator.channels=3"], r"model.generator.channels=3 but data.channels=1"),
        # a batch larger than the (shrunk) training set
        (["data.batch_size=1000"], r"data.batch_size=1000 is larger than the 550 training"),
        # a required value left out
        (["data=image_folder"], r"data.path must be set: add data.path=\.\.\."),
    ],
)
def test_config_mistakes_fail_with_the_key_and_the_fix(
    make_cfg, overrides: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        run(make_cfg(*overrides, "test=false"))


def test_unknown_group_option_lists_the_valid_choices(make_cfg) -> None:
    with pytest.raises(MissingConfigException) as err:
        make_cfg("model=vea")
    assert "Could not find 'model/vea'" in str(err.value)
    assert all(choice in str(err.value) for choice in ("gan", "vae", "wgan_gp", "vaegan"))


def test_misspelt_key_is_named(make_cfg) -> None:
    with pytest.raises(ConfigCompositionException) as err:
        make_cfg("model.optimizer.lrr=0.1")
    text = f"{err.value} {err.value.__cause__}"
    assert "model.optimizer.lrr" in text and "not in struct" in text


def test_unreadable_or_foreign_checkpoints(tmp_path: Path) -> None:
    from genlab.checkpoints.load import load_model

    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(b"PK\x03\x04 not a whole zip")
    with pytest.raises(CheckpointError, match="truncated, corrupt or not a PyTorch checkpoint"):
        load_model(truncated)
    plain = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match="not a Lightning checkpoint"):
        load_model(plain)
    foreign = tmp_path / "other_project.ckpt"
    torch.save({"state_dict": {}, "epoch": 3}, foreign)
    with pytest.raises(CheckpointError, match="not written by genlab"):
        load_model(foreign)


def test_sample_cli_on_a_corrupt_checkpoint_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "last.ckpt"
    bad.write_bytes(b"\x00" * 100)
    result = run_script(
        "sample.py", f"ckpt_path={bad}", f"out={tmp_path / 's.npy'}", f"hydra.run.dir={tmp_path}"
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("genlab: error: cannot read checkpoint") and "Traceback" not in last


def test_model_metric_on_the_wrong_model_type(make_cfg, tmp_path: Path) -> None:
    from genlab import evaluate

    cfg = make_cfg("debug=limit", "trainer.max_epochs=1", "test=false")
    run(cfg)
    ckpt = next((Path(cfg.paths.output_dir) / "checkpoints").glob("*.ckpt"))
    eval_cfg = make_cfg(f"ckpt_path={ckpt}", "metrics=[nll]", config_name="eval")
    with pytest.raises(ConfigError, match=r"a GAN checkpoint: it computes \['d_acc'\]"):
        evaluate.run(eval_cfg)


def test_output_dir_not_writable_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")  # a folder cannot be made inside a file, even by root
    result = run_script("train.py", *tiny_overrides(), f"paths.log_dir={blocker / 'outputs'}")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("genlab: error: cannot write the output directory"), result.stderr
    assert "paths.log_dir" in last


def test_resume_mistakes(make_cfg, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no checkpoint there"):
        run(make_cfg(f"resume={tmp_path}"))
    first = make_cfg("debug=limit", "trainer.max_epochs=1", "test=false")
    run(first)
    result = run_script("train.py", f"resume={first.paths.output_dir}", "model=vae")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "model=vae changes a config group" in last, result.stderr[-2000:]


def test_divergence_keeps_the_good_checkpoints(make_cfg) -> None:
    """A NaN loss stops the run naming the step and the last good checkpoint, and no
    checkpoint is written from the diverged weights."""
    from genlab.errors import DivergenceError

    cfg = make_cfg(
        "debug=limit",
        "trainer.max_epochs=3",
        "test=false",
        "+callbacks.poison._target_=tests.fault_injection.PoisonWeightsAt",
        "+callbacks.poison.epoch=1",
    )
    with pytest.raises(DivergenceError, match=r"(?s)step .*last.ckpt"):
        run(cfg)
    for path in (Path(cfg.paths.output_dir) / "checkpoints").glob("*.ckpt"):
        ckpt = torch.load(path, weights_only=True)
        assert ckpt["epoch"] == 0, path  # written before the divergence, never after
        assert all(torch.isfinite(t).all() for t in ckpt["state_dict"].values()), path

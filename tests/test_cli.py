"""The entry points as a user runs them: fresh processes, real argv, real run directories."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import TINY, run_script, tiny_overrides

pytestmark = pytest.mark.filterwarnings("ignore")


def test_gpu_on_cpu_machine_is_one_clear_line(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = run_script("train.py", "model=vae", "trainer=gpu", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("genlab: error: trainer.accelerator=gpu"), result.stderr
    assert "Traceback" not in result.stderr and "trainer=cpu" in lines[-1]


def test_unknown_option_lists_the_choices(tmp_path: Path) -> None:
    result = run_script("train.py", "model=gna", f"hydra.run.dir={tmp_path}")
    assert result.returncode != 0
    assert (
        "Could not find 'model/gna'" in result.stderr
        and "gan" in result.stderr
        and "vae" in result.stderr
    )


def test_missing_data_names_files(tmp_path: Path) -> None:
    result = run_script(
        "train.py",
        *tiny_overrides(),
        f"data.data_dir={tmp_path}",
        "data.download=false",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert (
        "mnist is missing" in last and "train-images-idx3-ubyte" in last and str(tmp_path) in last
    )


def test_multirun_one_directory_per_job(tmp_path: Path) -> None:
    result = run_script(
        "train.py",
        "-m",
        "model=gan,vae",
        *TINY,
        "debug=limit",
        "trainer.max_epochs=1",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for job, monitor in ((0, "val/fid"), (1, "val/elbo")):
        job_dir = tmp_path / str(job)
        assert (job_dir / ".hydra" / "overrides.yaml").exists()
        assert (job_dir / "checkpoints" / "last.ckpt").exists()
        assert monitor in (job_dir / "metrics.csv").read_text().splitlines()[0]


@pytest.fixture(scope="module")
def vae_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("vae_run")
    result = run_script(
        "train.py", *tiny_overrides("vae"), "debug=limit", f"hydra.run.dir={run_dir}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir / "checkpoints" / "last.ckpt"


def test_gan_checkpoint_samples(tmp_path: Path) -> None:
    from genlab.checkpoints.load import load_model
    from genlab.models.gan import GAN
    from genlab.sample import draw

    result = run_script(
        "train.py", *tiny_overrides("gan"), "debug=limit", f"hydra.run.dir={tmp_path}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    model, _ = load_model(tmp_path / "checkpoints" / "last.ckpt")
    assert isinstance(model, GAN) and not model.training  # BatchNorm in eval mode
    a, b = draw(model, 10, seed=0, batch_size=4), draw(model, 10, seed=0, batch_size=4)
    assert a.shape == (10, 1, 28, 28) and a.min() >= 0 and a.max() <= 1
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert a.std() > 0.01, "samples are not all the same flat image"


def test_sample_cli_round_trip(vae_checkpoint: Path, tmp_path: Path) -> None:
    outputs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        out = tmp_path / f"{name}.npy"
        result = run_script(
            "sample.py",
            f"ckpt_path={vae_checkpoint}",
            "n=20",
            f"out={out}",
            f"seed={seed}",
            "batch_size=7",
            "device=cpu",
            f"hydra.run.dir={tmp_path / name}",
        )
        assert result.returncode == 0, result.stderr[-3000:]
        outputs[name] = np.load(out)
    a = outputs["a"]
    assert a.shape == (20, 1, 28, 28) and a.dtype == np.float32
    assert a.min() >= 0 and a.max() <= 1
    np.testing.assert_array_equal(a, outputs["b"])  # same seed: the same samples, bit for bit
    assert not np.allclose(a, outputs["c"], atol=1e-3)


def test_samples_do_not_depend_on_batch_size(vae_checkpoint: Path) -> None:
    from genlab.checkpoints.load import load_model
    from genlab.sample import draw

    model, _ = load_model(vae_checkpoint)
    small, large = draw(model, 20, seed=3, batch_size=7), draw(model, 20, seed=3, batch_size=20)
    # Equal up to float rounding: conv kernels may sum in another order for another batch size.
    torch.testing.assert_close(small, large, rtol=0, atol=1e-5)


def test_sample_formats_and_errors(vae_checkpoint: Path, tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from genlab.errors import CheckpointError, ConfigError
    from genlab.sample import run

    base = {"ckpt_path": str(vae_checkpoint), "n": 9, "seed": 0, "batch_size": 4, "device": "cpu"}
    pt = run(OmegaConf.create({**base, "out": str(tmp_path / "s.pt")}))
    assert torch.load(pt).shape == (9, 1, 28, 28)
    png = run(OmegaConf.create({**base, "out": str(tmp_path / "grid.png")}))
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ConfigError, match="suffix must be one of"):
        run(OmegaConf.create({**base, "out": str(tmp_path / "s.jpg")}))
    with pytest.raises(CheckpointError, match="does not exist"):
        run(
            OmegaConf.create(
                {**base, "ckpt_path": str(tmp_path / "nope.ckpt"), "out": str(tmp_path / "x.npy")}
            )
        )


def test_eval_cli_on_another_data_group(vae_checkpoint: Path, tmp_path: Path) -> None:
    # data=... is composed fresh (with ${paths.data_dir}) and takes the model's image shape.
    result = run_script(
        "eval.py", f"ckpt_path={vae_checkpoint}", "data=mnist", "trainer=cpu",
        "metrics=[recon]", "trainer.limit_test_batches=2", f"hydra.run.dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "metrics.json").exists()


def test_eval_cli_reports_test_metrics(vae_checkpoint: Path, tmp_path: Path) -> None:
    result = run_script(
        "eval.py",
        f"ckpt_path={vae_checkpoint}",
        "trainer=cpu",
        "metrics=[nll]",
        "nll_samples=4",
        "trainer.limit_test_batches=3",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["metrics"]["test/elbo"] < 0 and report["metrics"]["test/kl"] > 0


def test_eval_cli_scores_a_checkpoint(vae_checkpoint: Path, tmp_path: Path) -> None:
    import json

    result = run_script(
        "eval.py", f"ckpt_path={vae_checkpoint}", "metrics=[fid,kid,coverage,nll,recon,d_acc]",
        "num_samples=300", "nll_samples=8", "trainer=cpu", "trainer.limit_test_batches=2",
        f"hydra.run.dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "metrics.json").read_text())
    m = report["metrics"]
    assert report["num_samples"] == 300 and report["num_real"] == 10000
    assert m["test/fid"] > 0 and 1 <= m["test/classes_covered"] <= 10
    # The importance-weighted bound is at least the ELBO (both in nats; nll = -bound).
    assert m["test/nll_nats"] <= -m["test/elbo"] + 1.0 and 0 < m["test/ssim"] <= 1
    output = result.stdout + result.stderr
    assert "test/fid" in result.stdout and "d_acc is not computed by VAE" in output
    assert (tmp_path / "metrics.csv").read_text().startswith("metric,value")


def test_eval_cli_scores_a_sample_file(tmp_path: Path) -> None:
    import json

    from genlab.data.mnist import MNISTDataModule
    from tests.conftest import SHIPPED

    dm = MNISTDataModule(data_dir=str(SHIPPED), val_size=600)
    dm.setup("fit")
    real = torch.stack([dm.val_set[i][0] for i in range(600)])
    files = {"real": real, "noise": torch.rand_like(real)}
    fid = {}
    for name, images in files.items():
        path = tmp_path / f"{name}.npy"
        np.save(path, (images * 255).round().numpy().astype(np.uint8))  # uint8 is accepted
        result = run_script(
            "eval.py", f"samples={path}", "data=mnist", "metrics=[fid,pr,coverage]",
            f"hydra.run.dir={tmp_path / name}",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        report = json.loads((tmp_path / name / "metrics.json").read_text())
        assert report["num_samples"] == 600
        fid[name] = report["metrics"]["test/fid"]
    assert fid["real"] * 10 < fid["noise"], fid
    assert report["metrics"]["test/precision"] < 0.1  # noise is off the digit manifold


def test_eval_bad_inputs_are_clear(tmp_path: Path, make_cfg) -> None:
    from genlab.errors import GenlabError
    from genlab.evaluate import run

    bad = tmp_path / "bad.npy"
    good = tmp_path / "good.npy"
    np.save(bad, np.random.rand(4, 28, 28).astype(np.float32) * 2 - 1)
    np.save(good, np.random.rand(4, 28, 28).astype(np.float32))
    cases = {
        (f"samples={bad}", "data=mnist"): "scale float images to [0, 1]",
        (f"samples={good}",): "needs data=<group>",
        (): "give ckpt_path=",
    }
    for overrides, message in cases.items():
        with pytest.raises(GenlabError, match=re.escape(message)):
            run(make_cfg(*overrides, config_name="eval"))
    # As a user sees it: one line on stderr, exit status 1.
    result = run_script("eval.py", "metrics=[fid,fidd]", f"hydra.run.dir={tmp_path / 'run'}")
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 1 and last.startswith("genlab: error: metrics=") and "fidd" in last

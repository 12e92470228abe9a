"""A model written outside src/genlab, following only docs/models.md, through the CLI.

The model below knows nothing of genlab (a plain LightningModule with automatic optimisation);
a config file in the researcher's own folder points at it. Nothing in genlab is edited: it
sweeps, resumes bit-exactly, samples and is evaluated by the same commands as genlab's models.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import TINY, run_script

MODEL = '''
"""An autoencoder whose decoder samples from N(0, I) codes: the contract and nothing else."""
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn


class Autoencoder(pl.LightningModule):
    model_metrics = ("mse",)  # eval.py metrics=[model] runs test_step for these

    def __init__(self, monitor: str, monitor_mode: str, code: int = 8, lr: float = 1e-2):
        super().__init__()
        self.monitor, self.monitor_mode = monitor, monitor_mode
        self.code, self.lr = code, lr
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, code))
        self.decoder = nn.Linear(code, 28 * 28)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    def _recon(self, x, noise: float = 0.0):
        z = self.encoder(x)
        z = z + noise * torch.randn_like(z)  # randomness in the step: resume must restore it
        return torch.sigmoid(self.decoder(z)).view_as(x), z

    def training_step(self, batch, batch_idx):
        x = batch[0]
        recon, z = self._recon(x, noise=0.1)
        loss = F.mse_loss(recon, x) + 1e-3 * z.pow(2).mean()
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/mse", F.mse_loss(self._recon(batch[0])[0], batch[0]))

    def test_step(self, batch, batch_idx):
        self.log("test/mse", F.mse_loss(self._recon(batch[0])[0], batch[0]))

    @torch.no_grad()
    def sample(self, n, generator=None):
        z = torch.randn(n, self.code, generator=generator).to(self.device)
        return torch.sigmoid(self.decoder(z)).view(n, 1, 28, 28)
'''

CONFIG = """\
_target_: lab_models.autoencoder.Autoencoder
monitor: val/mse
monitor_mode: min
code: 8
lr: 0.01
"""

SHORT = [
    "++trainer.limit_train_batches=4",
    "++trainer.limit_val_batches=1",
    "++trainer.log_every_n_steps=1",
    "test=false",
]


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A researcher's folder: lab_models/autoencoder.py and conf/model/autoencoder.yaml."""
    (tmp_path / "lab_models").mkdir()
    (tmp_path / "lab_models" / "__init__.py").write_text("")
    (tmp_path / "lab_models" / "autoencoder.py").write_text(MODEL)
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "autoencoder.yaml").write_text(CONFIG)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # where the lab's code is importable
    return tmp_path


def _ok(result) -> None:
    assert result.returncode == 0, result.stderr[-3000:]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_own_model_sweeps_resumes_samples_and_evaluates(lab: Path) -> None:
    model = [f"hydra.searchpath=[file://{lab / 'conf'}]", "model=autoencoder", *TINY, *SHORT]

    # A sweep of two learning rates, two epochs each.
    sweep = lab / "sweep"
    _ok(run_script("train.py", "-m", *model, "trainer.max_epochs=2", "model.lr=0.01,0.02",
                   f"hydra.sweep.dir={sweep}"))  # fmt: skip
    straight = sweep / "0"
    assert json.loads((straight / "result.json").read_text())["status"] == "ok"
    assert "val/mse" in (straight / "metrics.csv").read_text()
    assert (sweep / "summary.md").is_file()
    assert not torch.equal(
        _weights(straight)["decoder.weight"], _weights(sweep / "1")["decoder.weight"]
    )

    # The first job again, stopped after one epoch and resumed: the same weights, bit for bit.
    half = lab / "half"
    _ok(run_script("train.py", *model, "trainer.max_epochs=1", "model.lr=0.01",
                   f"hydra.run.dir={half}"))  # fmt: skip
    # The lab's config folder vouches for its model's _target_ (docs/security.md).
    searchpath = f"hydra.searchpath=[file://{lab / 'conf'}]"
    _ok(run_script("train.py", f"resume={half}", searchpath, "trainer.max_epochs=2"))
    a, b = _weights(straight), _weights(half)
    assert all(torch.equal(a[k], b[k]) for k in a), "resume is not exact"

    # Samples from the checkpoint, seeded and in range.
    out = lab / "samples.npy"
    _ok(run_script("sample.py", searchpath, f"ckpt_path={half / 'checkpoints' / 'last.ckpt'}", "n=12", f"out={out}", "seed=3",
                   f"hydra.run.dir={lab / 'sample'}"))  # fmt: skip
    samples = np.load(out)
    assert samples.shape == (12, 1, 28, 28) and samples.min() >= 0 and samples.max() <= 1

    # eval.py: sample metrics for every model, plus the metrics this model declares.
    _ok(run_script("eval.py", searchpath, f"ckpt_path={half / 'checkpoints' / 'last.ckpt'}",
                   "metrics=[fid,model]", "num_samples=64", "trainer=cpu",
                   "++trainer.limit_test_batches=2", f"hydra.run.dir={lab / 'eval'}"))  # fmt: skip
    metrics = json.loads((lab / "eval" / "metrics.json").read_text())["metrics"]
    assert metrics["test/fid"] > 0 and 0 < metrics["test/mse"] < 0.5

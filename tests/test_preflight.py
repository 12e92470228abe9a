"""The pre-flight check (genlab.models.contract): each way a model can break the contract of
docs/models.md stops ``train.py`` with one line naming the contract row and the fix, before any
data is loaded; a model that keeps the contract trains exactly as it would without the check.

"Before any data is loaded": the runs point data.data_dir at an empty folder with downloads
off, so any run that got as far as the data would stop with a DataError instead
(``test_a_good_model_passes_and_reaches_the_data`` shows it does).
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from genlab.errors import ConfigError, ContractError, DataError
from genlab.models.contract import check_contract, untouched
from genlab.train import run
from my_models.mlp_cvae import MLPCVAE
from my_models.mlp_vae import MLPVAE
from tests.conftest import run_script, tiny_overrides


# --- broken toy models: the worked example of docs/models.md with one mistake each ----------
class MinusOneToOne(MLPVAE):
    """Returns a tanh generator's [-1, 1] images unconverted."""

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.generate(self.noise(n, generator)) * 2 - 1


class IgnoresGenerator(MLPVAE):
    """Draws its latents from the global RNG whatever generator it is given."""

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.generate(self.noise(n))


class SeedsInside(MLPVAE):
    """Reproducible, but not by the caller's seed: every seed gives the same images."""

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.generate(self.noise(n, torch.Generator().manual_seed(0)))


class NoGeneratorArgument(MLPVAE):
    def sample(self, n: int) -> torch.Tensor:  # type: ignore[override]
        return self.generate(self.noise(n))


class NaNSamples(MLPVAE):
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return super().sample(n, generator) * float("nan")


class OwnRng(MLPVAE):
    """Draws its training noise from a generator of its own, which no checkpoint holds."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rng = torch.Generator().manual_seed(0)

    def elbo(self, x: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        z = mu + torch.randn(mu.shape, generator=self.rng) * torch.exp(0.5 * logvar)
        logits = self.decoder(z).view_as(x)
        log_px = -nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none")
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        return log_px.flatten(1).sum(1) - kl


class OwnRngSaved(OwnRng):
    """The same, with its generator's state in the checkpoint: exact resume holds."""

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["rng"] = self.rng.get_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self.rng.set_state(checkpoint["rng"])


class Plain(pl.LightningModule):
    """A plain LightningModule that declares nothing beyond the contract's musts."""

    def __init__(self) -> None:
        super().__init__()
        self.decoder = nn.Linear(4, 28 * 28)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(n, 4, generator=generator)
        return torch.sigmoid(self.decoder(z)).view(n, 1, 28, 28)


NO_DATA = ["data.download=false"]  # with data.data_dir=<an empty folder>, set per test


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        (
            ["model._target_=tests.test_preflight.MinusOneToOne"],
            ContractError,
            r"returned values in \[-.*\], not in \[0, 1\]: contract row 'sample'.*"
            r"Fix: convert inside the model, e\.g\. return \(x \+ 1\) / 2",
        ),
        (
            ["model._target_=tests.test_preflight.IgnoresGenerator"],
            ContractError,
            r"other images for the same seeded generator: it ignores its generator: contract row "
            r"'sample'.*generator=generator",
        ),
        (
            ["model._target_=tests.test_preflight.SeedsInside"],
            ContractError,
            r"the same images for seeds 0 and 1.*contract row 'sample'",
        ),
        (
            ["model._target_=tests.test_preflight.NoGeneratorArgument"],
            ContractError,
            r"NoGeneratorArgument\.sample\(n\) takes no generator: contract row 'sample'",
        ),
        (
            ["model._target_=tests.test_preflight.NaNSamples"],
            ContractError,
            r"returned NaN or Inf values: contract row 'sample'",
        ),
        # nets built for 32 px images while the data gives 28 px ones
        (
            ["model.image_size=32"],
            ContractError,
            r"returned shape \[2, 1, 32, 32\], but the data's images are \[2, 1, 28, 28\] "
            r"\(data.channels=1, data.image_size=28\): contract row 'sample'",
        ),
        (
            ["model._target_=tests.test_preflight.OwnRng"],
            ContractError,
            r"OwnRng\.rng is a torch\.Generator whose state is not in its checkpoint.*contract row "
            r"'randomness'.*save rng\.get_state\(\) in on_save_checkpoint",
        ),
        (
            ["model.monitor=val/elbbo"],
            ContractError,
            r"model.monitor=val/elbbo is logged neither by MLPVAE .* \(did you mean val/elbo\?\): "
            r"contract row 'monitor'",
        ),
        (
            ["~model.monitor"],
            ConfigError,
            r"model.monitor is not set: contract row 'monitor' .*Fix: add 'monitor: val/<metric>'",
        ),
        (
            ["~model.monitor_mode"],
            ConfigError,
            r"model.monitor_mode is not set: .*\+model.monitor_mode=min\|max",
        ),
    ],
    ids=[
        "range",
        "ignores_generator",
        "seeds_inside",
        "no_generator_argument",
        "nan",
        "shape",
        "own_rng",
        "monitor_typo",
        "no_monitor",
        "no_monitor_mode",
    ],
)
def test_contract_mistakes_stop_before_the_data_loads(
    make_cfg, tmp_path: Path, overrides: list[str], error: type, message: str
) -> None:
    cfg = make_cfg("model=mlp_vae", f"data.data_dir={tmp_path / 'empty'}", *NO_DATA, *overrides)
    with pytest.raises(error, match=message) as raised:
        run(cfg)
    assert "\n" not in str(raised.value)  # printed as one line by the entry points


def test_gan_monitor_typo_is_caught_before_an_epoch(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg("model.monitor=val/fidd", f"data.data_dir={tmp_path / 'empty'}", *NO_DATA)
    with pytest.raises(ContractError, match=r"val/fidd .*\(did you mean val/fid\?\)"):
        run(cfg)


def test_a_good_model_passes_and_reaches_the_data(make_cfg, tmp_path: Path) -> None:
    """The control of the table above: a model that keeps the contract passes the check, and
    the run stops only at the data, which is missing."""
    cfg = make_cfg("model=mlp_vae", f"data.data_dir={tmp_path / 'empty'}", *NO_DATA)
    with pytest.raises(DataError):
        run(cfg)


def test_the_error_is_one_line_on_the_command_line(tmp_path: Path) -> None:
    result = run_script(
        "train.py",
        *tiny_overrides("mlp_vae"),
        "model._target_=tests.test_preflight.MinusOneToOne",
        f"data.data_dir={tmp_path / 'empty'}",
        *NO_DATA,
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("genlab: error:")]
    assert "contract row 'sample' (docs/models.md) is broken. Fix: convert inside" in line


def _model(cls: type = MLPVAE, **kwargs) -> nn.Module:
    return cls(optimizer=torch.optim.Adam, latent_dim=4, hidden=16, **kwargs)


def test_a_model_owned_generator_saved_in_its_checkpoint_passes() -> None:
    check_contract(_model(OwnRngSaved), monitor="val/elbo", channels=1, image_size=28)


def test_a_plain_module_that_declares_nothing_passes_with_a_warning(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="genlab.models.contract"):
        check_contract(Plain(), monitor="val/mse", channels=1, image_size=28)
    assert "model.monitor=val/mse: Plain declares no logged_metrics" in caplog.text
    caplog.clear()
    # A monitor a configured callback logs needs no declaration.
    check_contract(
        Plain(), monitor="val/fid", channels=1, image_size=28, callback_metrics=["val/fid"]
    )
    assert not caplog.text


def test_a_declaring_model_refuses_a_monitor_it_does_not_log() -> None:
    model = _model()
    check_contract(model, monitor="train/elbo", channels=1, image_size=28)
    with pytest.raises(ContractError, match=r"logged metric \(val/elbo\)"):
        check_contract(model, monitor="val/loss", channels=1, image_size=28)


class _Stateful(MLPVAE):
    """Sampling moves everything it could: BatchNorm statistics, the global RNGs, a generator
    of its own; one submodule is kept in eval mode on purpose."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.norm = nn.BatchNorm1d(self.latent_dim)
        self.decoder.eval()
        self.rng = torch.Generator().manual_seed(3)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rng"] = self.rng.get_state()

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        torch.rand(1, generator=self.rng)
        torch.rand(1)  # the global RNGs
        random.random()
        np.random.rand()
        self.norm.train()  # even a sample() that switches to training mode
        return super().generate(self.norm(z))


def test_the_check_leaves_rngs_buffers_and_modes_as_they_were() -> None:
    model = _model(_Stateful)
    torch.manual_seed(7), random.seed(7), np.random.seed(7)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = {name: m.training for name, m in model.named_modules()}
    rng = model.rng.get_state()
    expected = torch.rand(3), random.random(), np.random.rand()
    torch.manual_seed(7), random.seed(7), np.random.seed(7)
    check_contract(model, monitor="val/elbo", channels=1, image_size=28)
    assert torch.equal(torch.rand(3), expected[0])
    assert (random.random(), np.random.rand()) == expected[1:]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert not modes["decoder"] and modes["norm"]
    assert torch.equal(model.rng.get_state(), rng)


def test_untouched_puts_back_what_a_block_moved() -> None:
    model = _model(_Stateful)
    mean = model.norm.running_mean.clone()
    with untouched(model):
        model.norm.running_mean += 1
        model.train()
    assert torch.equal(model.norm.running_mean, mean) and not model.decoder.training


def test_a_seeded_run_is_unchanged_by_the_check(make_cfg, tmp_path: Path, monkeypatch) -> None:
    """The same seeded tiny GAN epoch with and without the check: the same weights (G, D, EMA,
    BatchNorm statistics), bit for bit."""
    short = ["trainer.max_epochs=1", "++trainer.limit_train_batches=3",
             "++trainer.limit_val_batches=1", "test=false", "callbacks.fid=null",
             "model.monitor=val/d_loss", "logger=none"]  # fmt: skip
    weights = []
    for name, check in (("with", check_contract), ("without", lambda *a, **k: None)):
        monkeypatch.setattr("genlab.train.check_contract", check)
        cfg = make_cfg(*short)
        cfg.paths.output_dir = str(tmp_path / name)
        run(cfg)
        checkpoint = tmp_path / name / "checkpoints" / "last.ckpt"
        weights.append(torch.load(checkpoint, weights_only=True)["state_dict"])
    with_check, without = weights
    assert with_check.keys() == without.keys()
    assert all(torch.equal(with_check[k], without[k]) for k in with_check)


@pytest.mark.parametrize("monitor", ["val/precision", "val/recall"])
def test_precision_and_recall_monitors_come_from_pr(make_cfg, monitor: str) -> None:
    """callbacks.fid logs val/precision and val/recall when its metrics hold "pr"."""
    from genlab.train import callback_metrics, check_monitor_source

    cfg = make_cfg(f"model.monitor={monitor}", "model.monitor_mode=max")
    with pytest.raises(ConfigError, match=r"add pr to callbacks\.fid\.metrics"):
        check_monitor_source(cfg)
    cfg = make_cfg(
        f"model.monitor={monitor}", "model.monitor_mode=max", "callbacks.fid.metrics=[fid,pr]"
    )
    check_monitor_source(cfg)
    assert monitor in callback_metrics(cfg)


# --- conditional models: the 'conditional' row ------------------------------------------------
class IgnoresLabels(MLPCVAE):
    """Conditional by its flag, but every class gives the same images."""

    def generate(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return super().generate(z, torch.zeros_like(labels))


class NoLabelsArgument(MLPCVAE):
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:  # type: ignore[override]
        return super().sample(n, generator)


def _conditional(cls: type = MLPCVAE, classes: int = 10) -> nn.Module:
    return cls(optimizer=torch.optim.Adam, latent_dim=4, hidden=16, num_classes=classes)


def test_a_conditional_model_passes_and_honours_its_labels() -> None:
    model = _conditional()
    check_contract(model, monitor="val/elbo", channels=1, image_size=28, num_classes=10)
    seeded = torch.Generator().manual_seed(3)
    threes = model.sample(4, seeded, labels=torch.full((4,), 3))
    assert threes.shape == (4, 1, 28, 28) and threes.min() >= 0 and threes.max() <= 1
    # No labels: uniform classes from the same generator, drawn after the latents.
    seeded, again = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    z = torch.randn(4, 4, generator=again)
    drawn = torch.randint(10, (4,), generator=again)
    assert torch.equal(model.sample(4, seeded), model.generate(z, drawn).clamp(0, 1))


@pytest.mark.parametrize(
    ("model", "data_classes", "message"),
    [
        (_conditional(IgnoresLabels), 10, r"same images for classes 0 and 9: it ignores its labels"),
        (_conditional(NoLabelsArgument), 10, r"conditional \(num_classes=10\) but its sample\(\) takes no labels"),
        (_conditional(classes=5), 10, r"num_classes=5, but the data has 10 classes"),
    ],
    ids=["ignores_labels", "no_labels_argument", "other_classes"],
)  # fmt: skip
def test_conditional_mistakes_are_caught(model: nn.Module, data_classes: int, message: str) -> None:
    with pytest.raises(ContractError, match=rf"{message}.*contract row 'conditional'"):
        check_contract(
            model, monitor="val/elbo", channels=1, image_size=28, num_classes=data_classes
        )


def test_an_unconditional_model_refuses_labels() -> None:
    with pytest.raises(ConfigError, match=r"MLPVAE is unconditional \(num_classes=0\)"):
        _model().sample(2, labels=torch.tensor([1, 2]))


def test_nets_must_match_the_model_s_classes() -> None:
    from genlab.models.gan import GAN
    from genlab.nets.conv import ConvDecoder, ConvEncoder

    nets = {"generator": ConvDecoder(latent_dim=4, width=8, num_classes=10),
            "discriminator": ConvEncoder(width=8, num_classes=10)}  # fmt: skip
    with pytest.raises(
        ConfigError, match=r"model.generator.num_classes=10 but model.num_classes=0"
    ):
        GAN(**nets, optimizer=torch.optim.Adam, latent_dim=4)
    GAN(**nets, optimizer=torch.optim.Adam, latent_dim=4, num_classes=10)  # the conditional GAN

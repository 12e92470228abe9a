"""Framework behaviour lives in callbacks: a model that overrides every Lightning hook without
``super()`` loses none of it (genlab.callbacks.framework), and ``SomeModel.load_from_checkpoint``
goes through ``genlab.load_model``'s trust check."""

from __future__ import annotations

import warnings
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.core.hooks import CheckpointHooks, ModelHooks
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import genlab
from genlab.callbacks.framework import PerRankSeed, configure_nets
from genlab.callbacks.framework.seeding import rank_seed
from genlab.checkpoints.keys import CONFIG_KEY, LATEST_METRICS_KEY
from genlab.checkpoints.trust import UntrustedCheckpoint
from genlab.errors import CheckpointError, ConfigError
from genlab.models.base import GenerativeModel
from genlab.models.gan import GAN
from genlab.models.vae import VAE
from genlab.nets.conv import ConvDecoder, ConvEncoder
from genlab.train import run
from tests.conftest import framework_trainer

# Every hook of Lightning's ModelHooks and CheckpointHooks, plus setup/teardown.
# (configure_sharded_model is the deprecated twin of configure_model: Lightning refuses both.)
HOOKS = sorted(
    {n for c in (ModelHooks, CheckpointHooks) for n in vars(c) if n.startswith(("on_", "conf"))}
    - {"configure_sharded_model"}
    | {"setup", "teardown"}
)
# The hooks GenerativeModel used to carry framework behaviour in.
FORMER_HOOKS = [
    "configure_model",
    "on_train_start",
    "on_train_batch_start",
    "on_train_batch_end",
    "on_before_optimizer_step",
    "on_train_epoch_end",
    "on_save_checkpoint",
    "on_load_checkpoint",
]


def test_generative_model_overrides_no_lightning_hook() -> None:
    assert "on_train_epoch_end" in HOOKS and "on_save_checkpoint" in HOOKS  # the list is real
    assert [h for h in HOOKS if h in vars(GenerativeModel)] == []


def _recorder(name: str):
    def hook(self, *args: Any, **kwargs: Any) -> None:  # no super(): the base's is skipped
        self.calls.append(name)
        if name == "on_train_batch_start":
            self.batches_started.append((self.current_epoch, args[1]))
        if name == "on_before_optimizer_step":  # after the callbacks: the clipped norm
            (optimizer,) = args
            grads = [p.grad for g in optimizer.param_groups for p in g["params"]]
            norms = torch.stack([torch.linalg.vector_norm(g) for g in grads if g is not None])
            self.norms.append(float(torch.linalg.vector_norm(norms)))

    hook.__name__ = name
    return hook


class EveryHookGAN(GAN):
    """A GAN that overrides every Lightning hook, none of them calling super()."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[str] = []
        self.batches_started: list[tuple[int, int]] = []
        self.batches_trained: list[tuple[int, int]] = []
        self.norms: list[float] = []

    def training_step(self, batch: Any, batch_idx: int) -> None:
        self.batches_trained.append((self.current_epoch, batch_idx))
        super().training_step(batch, batch_idx)


for _hook in HOOKS:
    setattr(EveryHookGAN, _hook, _recorder(_hook))


def tiny(cls: type[GAN] = EveryHookGAN, **options: Any) -> GAN:
    return cls(
        generator=ConvDecoder(latent_dim=8, width=8),
        discriminator=ConvEncoder(out_features=1, width=8),
        optimizer=partial(torch.optim.Adam, lr=2e-3),
        latent_dim=8,
        **options,
    )


def loader(batches: int) -> DataLoader:
    images = torch.rand(16 * batches, 1, 28, 28)
    return DataLoader(TensorDataset(images, torch.zeros(len(images))), batch_size=16)


def fit(model: pl.LightningModule, epochs: int, batches: int = 4, **kwargs: Any) -> pl.Trainer:
    trainer = framework_trainer(
        accelerator="cpu",
        max_epochs=epochs,
        limit_val_batches=0,
        log_every_n_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )
    trainer.fit(model, loader(batches))
    return trainer


def test_a_model_overriding_every_hook_loses_nothing(tmp_path: Path) -> None:
    pl.seed_everything(0)
    model = tiny(
        scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5),
        gradient_clip_val=1e-3,  # far below the raw norm: every step is clipped
        channels_last=True,
        r1_gamma=1.0,
        r1_every=3,  # batches 0 and 3: a lazy penalty, kept by log_latest
    )
    trainer = fit(model, epochs=2)
    # Scheduler: stepped at the end of each of the 2 epochs.
    assert [g["lr"] for o in trainer.optimizers for g in o.param_groups] == [5e-4, 5e-4]
    # Clipping: every gradient reached the optimizer clipped.
    assert len(model.norms) == 16 and all(n <= 1.01e-3 for n in model.norms), model.norms
    # channels_last on every conv of every net.
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    # log_latest: logged on the logging steps and written into the checkpoint.
    latest = model.latest_metrics["train/r1_penalty"]
    assert torch.equal(trainer.callback_metrics["train/r1_penalty"], latest) and latest > 0
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    checkpoint = torch.load(tmp_path / "model.ckpt", weights_only=True)
    assert torch.equal(checkpoint[LATEST_METRICS_KEY]["train/r1_penalty"], latest)
    # ... and read back by a run resumed from it.
    model.latest_metrics = {}
    resumed = framework_trainer(accelerator="cpu", max_epochs=2, logger=False)
    resumed.fit(model, loader(4), ckpt_path=tmp_path / "model.ckpt")  # nothing left to train
    assert torch.equal(model.latest_metrics["train/r1_penalty"], latest)
    # The model's own hooks ran, in place of GenerativeModel's.
    assert set(FORMER_HOOKS) <= set(model.calls), set(FORMER_HOOKS) - set(model.calls)
    # The stop wrapper is gone with the fit: the model's own hook again.
    assert "on_train_batch_start" not in vars(model)


class StopAt(Callback):
    """Asks training to stop at the start of one batch, as a spent privacy budget does."""

    def __init__(self, epoch: int, batch_idx: int) -> None:
        self.at = (epoch, batch_idx)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if (trainer.current_epoch, batch_idx) == self.at:
            trainer.should_stop = True


def test_a_stop_request_ends_training_before_the_batch_even_before_min_epochs() -> None:
    pl.seed_everything(0)
    model = tiny()
    fit(model, epochs=3, callbacks=[StopAt(0, 2)], min_epochs=2)
    assert model.batches_trained == [(0, 0), (0, 1)]  # batch 2 never ran, nor any later one
    # The model's own hook still ran, before each batch, however the epoch then ended.
    assert model.batches_started == [(0, 0), (0, 1), (0, 2), (1, 0)]


class LightningExampleGAN(pl.LightningModule):
    """The shape of Lightning's own GAN example: a plain LightningModule, manual optimisation,
    G and D with a scheduler each, and its own on_train_epoch_end (which logs samples)."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.generator = nn.Sequential(nn.Linear(8, 28 * 28), nn.Sigmoid())
        self.discriminator = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 1))
        self.epoch_samples: list[torch.Tensor] = []

    def training_step(self, batch: Any, batch_idx: int) -> None:
        real = batch[0]
        opt_g, opt_d = self.optimizers()
        z = torch.randn(len(real), 8)
        self.toggle_optimizer(opt_g)
        fake = self.generator(z).view_as(real)
        g_loss = nn.functional.softplus(-self.discriminator(fake)).mean()
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        self.toggle_optimizer(opt_d)
        d_loss = (
            nn.functional.softplus(-self.discriminator(real)).mean()
            + nn.functional.softplus(self.discriminator(fake.detach())).mean()
        )
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        self.untoggle_optimizer(opt_d)

    def configure_optimizers(self):
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=1e-3)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=1e-3)
        schedulers = [torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.1) for o in (
            opt_g, opt_d)]  # fmt: skip
        return [opt_g, opt_d], schedulers

    def on_train_epoch_end(self) -> None:  # as the example does: no super()
        self.epoch_samples.append(self.generator(torch.randn(4, 8)).detach())


def test_a_port_of_lightnings_gan_example_keeps_its_lr_schedule() -> None:
    pl.seed_everything(0)
    model = LightningExampleGAN()
    trainer = fit(model, epochs=2, batches=2)
    assert len(model.epoch_samples) == 2  # its own hook ran
    lrs = [g["lr"] for o in trainer.optimizers for g in o.param_groups]
    assert lrs == pytest.approx([1e-5, 1e-5])  # 1e-3, stepped twice by gamma=0.1


def test_each_ddp_rank_draws_its_own_noise() -> None:
    base = torch.initial_seed()
    assert rank_seed(world_size=1, rank=0) is None  # one process: the seed stays
    assert [rank_seed(world_size=4, rank=r) for r in range(4)] == [base + r for r in range(4)]
    with torch.random.fork_rng():
        rank1 = SimpleNamespace(world_size=2, global_rank=1)
        PerRankSeed().on_train_start(rank1, None)  # type: ignore[arg-type]
        assert torch.initial_seed() == base + 1
    assert torch.initial_seed() == base


def test_compile_applies_once_per_net_it_may_compile() -> None:
    model = tiny(GAN, compile=True, r1_gamma=1.0)  # D is differentiated twice: left eager
    configure_nets(model)
    compiled = model.generator._compiled_call_impl
    assert compiled is not None, "G was not compiled"
    assert model.discriminator._compiled_call_impl is None, "D was compiled"
    configure_nets(model)  # Lightning's setup for test after fit: no recompilation
    assert model.generator._compiled_call_impl is compiled


def test_load_from_checkpoint_goes_through_load_model(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg("debug=limit", "trainer.max_epochs=1", "test=false")
    before = list(warnings.filters)
    run(cfg)
    assert list(warnings.filters) == before  # the extras' filters were the run's only
    path = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    model = GAN.load_from_checkpoint(path)
    reference, _ = genlab.load_model(path)
    assert type(model) is GAN and not model.training
    for (name, a), (_, b) in zip(
        model.state_dict().items(), reference.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    with pytest.raises(CheckpointError, match=r"holds a GAN, not a VAE: .*genlab\.load_model"):
        VAE.load_from_checkpoint(path)
    with pytest.raises(ConfigError, match=r"genlab\.load_model\(path\)"):
        GAN.load_from_checkpoint(path, strict=False)
    # The same trust check: a stored config naming a callable nobody vouched for is refused.
    checkpoint = torch.load(path, weights_only=True)
    checkpoint[CONFIG_KEY]["model"]["_target_"] = "subprocess.Popen"
    torch.save(checkpoint, tmp_path / "foreign.ckpt")
    with pytest.raises(UntrustedCheckpoint, match=r"subprocess\.Popen"):
        GAN.load_from_checkpoint(tmp_path / "foreign.ckpt")

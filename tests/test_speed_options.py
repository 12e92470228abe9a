"""Mixed precision, torch.compile and channels_last: every player still learns under each."""

from __future__ import annotations

from functools import partial

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.precision import MixedPrecision
from torch.utils.data import DataLoader, TensorDataset

from genlab.models.gan import GAN
from genlab.models.vae import VAE
from genlab.nets.conv import ConvDecoder, ConvEncoder
from tests.conftest import framework_trainer


def tiny_gan(**options) -> GAN:
    return GAN(
        generator=ConvDecoder(latent_dim=8, width=8),
        discriminator=ConvEncoder(out_features=1, width=8),
        optimizer=partial(torch.optim.Adam, lr=2e-3, betas=(0.5, 0.999)),
        latent_dim=8,
        **options,
    )


def tiny_vae(**options) -> VAE:
    return VAE(
        encoder=ConvEncoder(out_features=8, width=8),
        decoder=ConvDecoder(latent_dim=4, width=8, out_activation=None),
        optimizer=partial(torch.optim.Adam, lr=2e-3),
        latent_dim=4,
        **options,
    )


def fit(model: pl.LightningModule, batches: int = 3, **trainer_kwargs) -> pl.Trainer:
    images = torch.rand(16 * batches, 1, 28, 28)
    loader = DataLoader(TensorDataset(images, torch.zeros(len(images))), batch_size=16)
    trainer = framework_trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_kwargs,
    )
    trainer.fit(model, loader)
    return trainer


def snapshot(model: torch.nn.Module) -> dict[str, list[torch.Tensor]]:
    return {
        name: [p.detach().clone() for p in net.parameters()]
        for name, net in model.named_children()
        if name != "generator_ema"
    }


def assert_every_net_updated(before: dict, model: torch.nn.Module) -> None:
    for name, params in before.items():
        after = list(getattr(model, name).parameters())
        changed = sum(not torch.equal(a, b) for a, b in zip(params, after, strict=True))
        assert changed == len(params), f"{name}: {changed}/{len(params)} tensors changed"
        assert all(torch.isfinite(p).all() for p in after), f"{name} has non-finite weights"


@pytest.mark.parametrize("make", [tiny_gan, tiny_vae], ids=["gan", "vae"])
def test_bf16_mixed_updates_every_net(make) -> None:
    pl.seed_everything(0)
    model = make()
    before = snapshot(model)
    trainer = fit(model, precision="bf16-mixed")
    assert_every_net_updated(before, model)
    losses = [v for k, v in trainer.callback_metrics.items() if k.startswith("train/")]
    assert losses and all(torch.isfinite(v) for v in losses)
    # Weights stay float32 (only the maths runs in bf16): checkpoints are precision-agnostic.
    assert all(p.dtype == torch.float32 for p in model.parameters())


class ClipRecorder(GAN):
    """Records each gradient norm right after the model's own clipping."""

    norms: list[float]

    def on_before_optimizer_step(self, optimizer) -> None:
        super().on_before_optimizer_step(optimizer)
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))))


def test_fp16_grad_scaler_clips_unscaled_gradients() -> None:
    # Lightning maps 16-mixed to bf16 on CPU; an explicit plugin runs the real fp16 + GradScaler
    # path (the one GPUs take) here.
    pl.seed_everything(0)
    model = ClipRecorder(
        generator=ConvDecoder(latent_dim=8, width=8),
        discriminator=ConvEncoder(out_features=1, width=8),
        optimizer=partial(torch.optim.Adam, lr=2e-3, betas=(0.5, 0.999)),
        latent_dim=8,
        gradient_clip_val=1e-3,  # far below the raw norm: every step is clipped
    )
    model.norms = []
    before = snapshot(model)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    trainer = fit(model, plugins=[MixedPrecision("16-mixed", "cpu", scaler)])
    assert_every_net_updated(before, model)
    finite = [n for n in model.norms if n == n and n != float("inf")]
    assert finite, "no finite gradient at all"
    # Clipping the scaled gradients would leave norms of 1e-3 / 1024 after unscaling.
    assert all(0.5e-3 < n <= 1.01e-3 for n in finite), finite
    assert trainer.precision_plugin.scaler is scaler


@pytest.mark.parametrize("make", [tiny_gan, tiny_vae], ids=["gan", "vae"])
def test_channels_last_updates_every_net(make) -> None:
    pl.seed_everything(0)
    model = make(channels_last=True)
    before = snapshot(model)
    fit(model)
    assert_every_net_updated(before, model)
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)


@pytest.mark.slow
def test_compile_updates_every_net_and_keeps_checkpoint_keys() -> None:
    pl.seed_everything(0)
    model = tiny_gan(compile=True)
    keys = set(model.state_dict())
    before = snapshot(model)
    fit(model, batches=2)
    assert_every_net_updated(before, model)
    assert model.generator._compiled_call_impl is not None, "G was not compiled"
    assert model.discriminator._compiled_call_impl is not None, "D was not compiled"
    assert set(model.state_dict()) == keys, "compiling changed the checkpoint keys"
    samples = model.sample(4)
    assert samples.shape == (4, 1, 28, 28) and samples.min() >= 0 and samples.max() <= 1


@pytest.mark.slow
def test_compile_leaves_a_twice_differentiated_discriminator_eager() -> None:
    """R1 (the default GAN) backpropagates through D's input gradient, which compiled graphs
    cannot: G is compiled, D runs eagerly, and every net still learns."""
    pl.seed_everything(0)
    model = tiny_gan(compile=True, r1_gamma=1.0, r1_every=1)
    before = snapshot(model)
    fit(model, batches=2)
    assert_every_net_updated(before, model)
    assert model.generator._compiled_call_impl is not None, "G was not compiled"
    assert model.discriminator._compiled_call_impl is None, "D was compiled"


@pytest.mark.slow
def test_compile_trains_a_conditional_gan() -> None:
    """The conditional nets take labels as a second argument through torch.compile: both nets
    are compiled, every weight learns (the class embeddings included) and sample() honours
    labels afterwards."""
    pl.seed_everything(0)
    model = GAN(
        generator=ConvDecoder(latent_dim=8, width=8, num_classes=10),
        discriminator=ConvEncoder(out_features=1, width=8, num_classes=10),
        optimizer=partial(torch.optim.Adam, lr=2e-3, betas=(0.5, 0.999)),
        latent_dim=8,
        num_classes=10,
        compile=True,
    )
    before = snapshot(model)
    fit(model, batches=2)
    assert_every_net_updated(before, model)
    assert model.generator._compiled_call_impl is not None, "G was not compiled"
    assert model.discriminator._compiled_call_impl is not None, "D was not compiled"
    seeded = [torch.Generator().manual_seed(0) for _ in range(2)]
    threes, sevens = (
        model.sample(4, g, labels=torch.full((4,), c)) for g, c in zip(seeded, (3, 7), strict=True)
    )
    assert threes.shape == (4, 1, 28, 28) and not torch.equal(threes, sevens)

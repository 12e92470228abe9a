"""GAN losses, penalties, spectral norm, EMA and DiffAugment against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate

from genlab.config.validation import validate
from genlab.errors import ConfigError
from genlab.models import losses
from genlab.models.diffaugment import check_policy, diff_augment
from genlab.models.penalties import gradient_penalty, r1_penalty

REAL = torch.tensor([2.0, -1.0])
FAKE = torch.tensor([0.5, -3.0])


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


@pytest.mark.parametrize(
    ("name", "d_expected", "g_expected"),
    [
        # (softplus(-2) + softplus(1)) / 2 + (softplus(0.5) + softplus(-3)) / 2
        ("non_saturating", (softplus(-2) + softplus(1) + softplus(0.5) + softplus(-3)) / 2,
         (softplus(-0.5) + softplus(3)) / 2),
        ("hinge", (0 + 2) / 2 + (1.5 + 0) / 2, 1.25),  # relu(1 - r) + relu(1 + f); -mean(f)
        ("wasserstein", -1.25 - 0.5, 1.25),  # mean(f) - mean(r); -mean(f)
        ("least_squares", 0.5 * ((1 + 4) / 2 + (0.25 + 9) / 2), 0.5 * (0.25 + 16) / 2),
    ],
)  # fmt: skip
def test_gan_losses_match_hand_computed_values(name, d_expected, g_expected) -> None:
    d_loss, g_loss = losses.GAN_LOSSES[name]
    assert d_loss(REAL, FAKE).item() == pytest.approx(d_expected, rel=1e-6)
    assert g_loss(FAKE).item() == pytest.approx(g_expected, rel=1e-6)


def test_label_smoothing_targets_real_at_one_minus_s() -> None:
    s = 0.1
    expected = sum(-(1 - s) * math.log(1 / (1 + math.exp(-r))) - s * math.log(1 - 1 / (1 + math.exp(-r)))
                   for r in REAL.tolist()) / 2 + (softplus(0.5) + softplus(-3)) / 2  # fmt: skip
    assert losses.nonsaturating_d_loss(REAL, FAKE, label_smoothing=s).item() == pytest.approx(
        expected, rel=1e-6
    )


def test_gradient_penalty_of_a_linear_critic() -> None:
    w = torch.tensor([3.0, 0.0, 0.0, 0.0]).view(1, 1, 2, 2)  # ||grad|| = 3 everywhere

    def critic(x):
        return (x * w).flatten(1).sum(1)

    real, fake = torch.randn(5, 1, 2, 2), torch.randn(5, 1, 2, 2)
    assert gradient_penalty(critic, real, fake, weight=10.0).item() == pytest.approx(40.0)


def test_r1_penalty_of_a_quadratic() -> None:
    def disc(x):
        return 0.5 * x.pow(2).flatten(1).sum(1)  # grad = x

    real = torch.randn(6, 1, 3, 3)
    expected = 0.5 * 10.0 * real.pow(2).flatten(1).sum(1).mean()
    assert r1_penalty(disc, real, gamma=10.0).item() == pytest.approx(expected.item(), rel=1e-5)


def _model(make_cfg, *overrides):
    torch.manual_seed(0)
    return instantiate(make_cfg(*overrides).model)


def test_spectral_norm_bounds_the_largest_singular_value(make_cfg) -> None:
    gan = _model(make_cfg, "model=hinge_gan")
    x = torch.randn(8, 1, 28, 28)
    for _ in range(30):  # power iterations run in training-mode forward passes
        gan.discriminator(x)
    layers = [
        m for m in gan.discriminator.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    ]
    assert layers
    for layer in layers:
        sigma = torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2)
        assert sigma <= 1.05, (layer, sigma)


def test_ema_generator_trails_and_is_used_for_sampling(make_cfg) -> None:
    from genlab.train import run

    cfg = make_cfg("model=gan", "model.ema_decay=0.9", "debug=limit")
    run(cfg)
    from genlab.checkpoints.load import load_model

    gan, _ = load_model(f"{cfg.paths.output_dir}/checkpoints/last.ckpt")
    raw = torch.cat([p.flatten() for p in gan.generator.parameters()])
    ema = torch.cat([p.flatten() for p in gan.generator_ema.parameters()])
    assert not torch.allclose(raw, ema)  # saved in the checkpoint, and different
    z_gen = torch.Generator().manual_seed(0)
    z = gan.noise(4, torch.Generator().manual_seed(0))
    torch.testing.assert_close(gan.sample(4, z_gen), ((gan.generator_ema(z) + 1) / 2).clamp(0, 1))


def test_diffaugment_is_differentiable_and_checked() -> None:
    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    y = diff_augment(x, check_policy(["color", "translation", "cutout"]))
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="unknown"):
        check_policy(["translate"])


@pytest.mark.parametrize("model", ["gan", "wgan_gp", "hinge_gan", "lsgan", "beta_vae", "vaegan"])
@pytest.mark.parametrize("image_size", [28, 64])
def test_every_model_config_runs(make_cfg, model: str, image_size: int) -> None:
    from genlab.train import run

    overrides = [f"model={model}", f"data.image_size={image_size}", "debug=fast"]
    if model == "gan":  # the remaining switches, all at once
        overrides += ["model.r1_gamma=1", "model.r1_every=1", "model.label_smoothing=0.1",
                      "model.diffaugment=[color,translation,cutout]", "model.ema_decay=0.99"]  # fmt: skip
    assert run(make_cfg(*overrides)) is not None


def test_bad_gan_switches_are_config_errors(make_cfg) -> None:
    with pytest.raises(Exception, match="label_smoothing works with loss=non_saturating"):
        _model(make_cfg, "model=hinge_gan", "model.label_smoothing=0.1")
    with pytest.raises(ConfigError, match=r"model.ema_decay=1.5 must be in \(0, 1\)"):
        validate(make_cfg("model=gan", "model.ema_decay=1.5"))


def test_kl_schedules_and_free_bits(make_cfg) -> None:
    import csv
    from pathlib import Path

    from genlab.train import run

    for schedule, warmup in (("linear", 1), ("cyclical", 0.5)):
        cfg = make_cfg("model=vae", f"model.kl_schedule={schedule}",
                       f"model.kl_warmup_epochs={warmup}", "model.beta=2", "debug=limit")  # fmt: skip
        run(cfg)
        text = (Path(cfg.paths.output_dir) / "metrics.csv").read_text().splitlines()
        rows = list(csv.DictReader(text))
        weights = [float(r["train/kl_weight"]) for r in rows if r.get("train/kl_weight")]
        assert weights[0] == 0.0 and max(weights) <= 2.0
        if schedule == "linear":  # ramps over epoch 0, then stays at beta
            assert weights[:5] == sorted(weights[:5]) and weights[5:] == [2.0] * 5
        else:  # 1-epoch cycles: the ramp starts again in epoch 1
            assert weights[5] == 0.0 and weights[3] == 2.0
    vae = _model(make_cfg, "model=vae", "model.free_bits=0.5", "model.latent_dim=4")
    mu, logvar = torch.zeros(3, 4), torch.zeros(3, 4)  # KL 0 in every dimension
    assert vae.kl_penalty(mu, logvar).item() == pytest.approx(4 * 0.5)
    with pytest.raises(Exception, match="kl_warmup_epochs > 0"):
        _model(make_cfg, "model=vae", "model.kl_schedule=linear")


def test_latent_interpolation(make_cfg) -> None:
    from genlab.sample import interpolate, slerp

    a, b = torch.randn(1, 3, 8), torch.randn(1, 3, 8)
    path = slerp(a, b, torch.linspace(0, 1, 5))
    torch.testing.assert_close(path[0], a[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(path[-1], b[0], atol=1e-5, rtol=0)
    vae = _model(make_cfg, "model=vae").eval()
    walks = interpolate(vae, rows=3, steps=5, seed=0)
    assert walks.shape == (15, 1, 28, 28) and walks.min() >= 0 and walks.max() <= 1
    torch.testing.assert_close(walks, interpolate(vae, rows=3, steps=5, seed=0))

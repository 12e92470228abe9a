"""The models learn: GAN updates both players as configured, the VAE's ELBO rises."""

from __future__ import annotations

from functools import partial

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from genlab.callbacks.framework import LatestMetrics
from genlab.data.mnist import MNISTDataModule
from genlab.errors import ConfigError
from genlab.models.gan import GAN
from genlab.models.vae import VAE
from genlab.nets.conv import ConvDecoder, ConvEncoder
from tests.conftest import SHIPPED, framework_trainer


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    dm = MNISTDataModule(data_dir=str(SHIPPED), train_fraction=0.05)
    dm.setup("fit")
    return dm.train_set.images.float() / 255  # 2750 real digits in [0, 1]


def tiny_gan(n_critic: int = 1, norm: str = "batch", **options) -> GAN:
    return GAN(
        generator=ConvDecoder(latent_dim=8, width=8, norm=norm),
        discriminator=ConvEncoder(out_features=1, width=8, norm=norm),
        optimizer=partial(torch.optim.Adam, lr=2e-3, betas=(0.5, 0.999)),
        latent_dim=8,
        n_critic=n_critic,
        **options,
    )


def tiny_vae(likelihood: str = "bernoulli") -> VAE:
    return VAE(
        encoder=ConvEncoder(out_features=8, width=16),
        decoder=ConvDecoder(latent_dim=4, width=16, out_activation=None),
        optimizer=partial(torch.optim.Adam, lr=2e-3),
        latent_dim=4,
        likelihood=likelihood,
    )


def fit(
    model: pl.LightningModule, images: torch.Tensor, epochs: int, batch_size: int = 32
) -> pl.Trainer:
    loader = DataLoader(
        TensorDataset(images, torch.zeros(len(images))), batch_size=batch_size, shuffle=True
    )
    trainer = framework_trainer(
        accelerator="cpu",
        max_epochs=epochs,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, loader)
    return trainer


def adam_steps(optimizer) -> int:
    return int(next(iter(optimizer.state.values()))["step"])


@pytest.mark.parametrize(("n_critic", "g_steps"), [(1, 4), (2, 2)])
def test_gan_steps_both_players(digits: torch.Tensor, n_critic: int, g_steps: int) -> None:
    pl.seed_everything(0)
    gan = tiny_gan(n_critic)
    g0 = [p.detach().clone() for p in gan.generator.parameters()]
    d0 = [p.detach().clone() for p in gan.discriminator.parameters()]
    trainer = fit(gan, digits[:128], epochs=1)  # 4 batches
    opt_g, opt_d = (o.optimizer if hasattr(o, "optimizer") else o for o in trainer.optimizers)
    assert adam_steps(opt_d) == 4, "one discriminator step per batch"
    assert adam_steps(opt_g) == g_steps, "one generator step every n_critic batches"
    assert all(not torch.equal(a, b) for a, b in zip(g0, gan.generator.parameters(), strict=True))
    assert all(
        not torch.equal(a, b) for a, b in zip(d0, gan.discriminator.parameters(), strict=True)
    )
    for key in ("train/d_loss", "train/g_loss", "train/d_real", "train/d_fake", "train/d_real_acc"):
        assert torch.isfinite(trainer.callback_metrics[key]), key


def test_lazy_r1_logs_its_latest_value_on_every_logging_step(digits: torch.Tensor) -> None:
    # R1 runs on batches 0 and 2 of each 4-batch epoch; the logging step is the epoch's last
    # batch (3), which must log batch 2's value, and a checkpoint must carry it to a resume.
    pl.seed_everything(0)
    gan = tiny_gan(r1_gamma=1.0, r1_every=2)
    where, computed, logged = [None], {}, []
    d_step, keep, log = gan._discriminator_step, gan.log_latest, gan.log

    def spy_d_step(opt_d, real, fake, labels, batch_idx, log_now):
        where[0] = (gan.current_epoch, batch_idx)
        d_step(opt_d, real, fake, labels, batch_idx, log_now)

    def spy_keep(name, value):
        computed[where[0]] = value.detach().clone()
        keep(name, value)

    def spy_log(name, value, *args, **kwargs):
        if name == "train/r1_penalty":
            logged.append((where[0], value.detach().clone()))
        log(name, value, *args, **kwargs)

    gan._discriminator_step, gan.log_latest, gan.log = spy_d_step, spy_keep, spy_log
    fit(gan, digits[:128], epochs=2)
    assert sorted(computed) == [(0, 0), (0, 2), (1, 0), (1, 2)]
    assert [at for at, _ in logged] == [(0, 3), (1, 3)]
    for (epoch, _), value in logged:
        assert torch.equal(value, computed[(epoch, 2)]) and value > 0

    # A model resumed from a checkpoint logs the saved value at its first logging step.
    checkpoint: dict = {}
    latest = LatestMetrics()  # the framework callback that persists and logs log_latest's values
    latest.on_save_checkpoint(None, gan, checkpoint)
    resumed = tiny_gan(r1_gamma=1.0, r1_every=2)
    latest.on_load_checkpoint(None, resumed, checkpoint)
    relogged = []
    resumed.log = lambda name, value, *args, **kwargs: relogged.append((name, value))
    latest.on_train_batch_end(None, resumed, None, None, 0)  # no trainer: every batch logs
    assert [name for name, _ in relogged] == ["train/r1_penalty"]
    assert torch.equal(relogged[0][1], computed[(1, 2)])


def test_top_k_training_teaches_g_with_the_fakes_d_rates_best(digits: torch.Tensor) -> None:
    pl.seed_everything(0)
    gan = tiny_gan(top_k=0.25, top_k_decay=0.5)  # kept: 1, 0.5, then 0.25 of each batch
    kept, select = [], gan.best_fakes

    def spy(logits: torch.Tensor) -> torch.Tensor:
        best = select(logits)
        ranked = logits.detach().flatten().sort().values
        assert torch.equal(
            best.detach().flatten().sort().values, ranked[len(ranked) - best.numel() :]
        )
        kept.append((gan.current_epoch, best.numel()))
        return best

    gan.best_fakes = spy
    fit(gan, digits[:96], epochs=4)  # 3 batches of 32 per epoch
    assert sorted(set(kept)) == [(0, 32), (1, 16), (2, 8), (3, 8)]
    assert len(kept) == 12, "every generator step goes through the selection"


def test_discriminator_learns_to_recognise_real_digits(digits: torch.Tensor) -> None:
    pl.seed_everything(0)
    gan = tiny_gan(norm="none")  # no BatchNorm: D(x) is the same in train and eval mode
    real = digits[:32] * 2 - 1
    with torch.no_grad():
        before = torch.sigmoid(gan.discriminator(real)).mean()
    fit(gan, digits[:32].repeat(4, 1, 1, 1), epochs=5)  # 20 batches
    with torch.no_grad():
        after = torch.sigmoid(gan.discriminator(real)).mean()
    assert after > before + 0.1, f"D(x) {before:.3f} -> {after:.3f}"


def test_gan_samples_are_images_in_unit_range() -> None:
    gan = tiny_gan().eval()
    x = gan.sample(6, generator=torch.Generator().manual_seed(1))
    y = gan.sample(6, generator=torch.Generator().manual_seed(1))
    assert x.shape == (6, 1, 28, 28) and x.min() >= 0 and x.max() <= 1
    assert torch.equal(x, y), "same seed, same samples"


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_vae_elbo_improves(digits: torch.Tensor, likelihood: str) -> None:
    pl.seed_everything(0)
    vae = tiny_vae(likelihood)
    held_out = digits[-256:]

    def elbo() -> float:
        vae.eval()
        with torch.no_grad():
            torch.manual_seed(1)
            log_px, kl, _ = vae.elbo_terms(held_out)
        vae.train()
        return float((log_px - kl).mean())

    before = elbo()
    fit(vae, digits[:-256], epochs=5, batch_size=64)  # ~195 steps
    after = elbo()
    # Bernoulli: from ~-550 nats (random decoder) to well under -250 in 200 steps.
    assert after > before + 150, f"ELBO {before:.1f} -> {after:.1f} nats"
    if likelihood == "gaussian":
        assert abs(vae.log_sigma.exp() - 0.1) > 0.005, "the shared sigma is learned (init 0.1)"


def test_vae_interface_shapes(digits: torch.Tensor) -> None:
    vae = tiny_vae().eval()
    x = digits[:5]
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (5, 4)
    for out in (vae.decode(mu), vae.reconstruct(x), vae.sample(5)):
        assert out.shape == (5, 1, 28, 28) and out.min() >= 0 and out.max() <= 1


def test_vae_rejects_mismatched_encoder() -> None:
    vae = VAE(
        encoder=ConvEncoder(out_features=5, width=8),
        decoder=ConvDecoder(latent_dim=4, width=8, out_activation=None),
        optimizer=partial(torch.optim.Adam, lr=1e-3),
        latent_dim=4,
    )
    with pytest.raises(ValueError, match="2 \\* latent_dim = 8"):
        vae.encode(torch.rand(2, 1, 28, 28))


def test_non_finite_loss_stops_with_advice() -> None:
    gan = tiny_gan()
    opt = torch.optim.SGD(gan.parameters(), lr=0.1)
    with pytest.raises(
        FloatingPointError, match=r"train/d_loss is nan at global step 0.*ckpt_path="
    ):
        gan.backward_and_step(torch.tensor(float("nan")), opt, "train/d_loss")


def test_exploding_gradients_stop_with_the_last_checkpoint(make_cfg) -> None:
    from genlab.train import run

    # Train one epoch (a checkpoint is written), then diverge in the next one.
    cfg = make_cfg("model=gan", "debug=limit", "trainer.max_epochs=2")
    run(cfg)
    last = f"{cfg.paths.output_dir}/checkpoints/last.ckpt"
    resumed = make_cfg("model=gan", "debug=limit", "trainer.max_epochs=3", f"ckpt_path={last}",
                       "callbacks.divergence_guard.max_grad_norm=1e-9")  # fmt: skip
    resumed.paths.output_dir = cfg.paths.output_dir
    with pytest.raises(
        FloatingPointError, match=r"gradient norm .* at global step \d+.*ckpt_path=.*\.ckpt"
    ):
        run(resumed)


def test_vaegan_steps_its_three_optimizers_once_per_batch(digits: torch.Tensor) -> None:
    from functools import partial

    from genlab.models.vaegan import VAEGAN

    pl.seed_everything(0)
    model = VAEGAN(
        encoder=ConvEncoder(out_features=8, width=8),
        decoder=ConvDecoder(latent_dim=4, width=8),
        discriminator=ConvEncoder(out_features=1, width=8),
        optimizer=partial(torch.optim.Adam, lr=1e-3),
        latent_dim=4,
    )
    nets = {n: [p.detach().clone() for p in getattr(model, n).parameters()]
            for n in ("encoder", "decoder", "discriminator")}  # fmt: skip
    trainer = fit(model, digits[:96], epochs=1)  # 3 batches
    opts = [o.optimizer if hasattr(o, "optimizer") else o for o in trainer.optimizers]
    assert [adam_steps(o) for o in opts] == [3, 3, 3]  # encoder, decoder, discriminator
    for name, before in nets.items():
        after = list(getattr(model, name).parameters())
        assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True)), name
    x = digits[:4].unsqueeze(1) if digits.dim() == 3 else digits[:4]
    model.eval()
    assert model.reconstruct(x).shape == x.shape and model.sample(5).shape == (5, 1, 28, 28)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (4, 4)


def test_vaegan_decoder_learns_only_from_its_own_loss(digits: torch.Tensor) -> None:
    # The encoder's loss (KL + feature loss) runs through the decoder, but with gamma=0 and no
    # pixel loss the decoder's step is the adversarial one alone: scaling the encoder's feature
    # loss a thousandfold must not move the decoder differently. (Its gradients were once kept
    # by reference and the encoder's backward added into them.)
    from functools import partial

    from genlab.models.vaegan import VAEGAN

    def decoder_after_one_batch(feature_scale: float) -> list[torch.Tensor]:
        pl.seed_everything(0)
        model = VAEGAN(
            encoder=ConvEncoder(out_features=8, width=8),
            decoder=ConvDecoder(latent_dim=4, width=8),
            discriminator=ConvEncoder(out_features=1, width=8),
            optimizer=partial(torch.optim.SGD, lr=0.1),
            latent_dim=4,
            gamma=0.0,
            adversarial_reconstructions=False,
        )
        feature_loss = model._feature_loss
        model._feature_loss = lambda x, x_rec: feature_scale * feature_loss(x, x_rec)
        fit(model, digits[:32], epochs=1)  # one batch
        return [p.detach().clone() for p in model.decoder.parameters()]

    plain, scaled = decoder_after_one_batch(1.0), decoder_after_one_batch(1000.0)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, scaled, strict=True))


def test_per_step_metrics_are_computed_only_on_logging_steps(digits: torch.Tensor) -> None:
    # self.log costs ~1 ms of Python: D's diagnostics are logged on the batches a logger
    # records (every log_every_n_steps, here 3) and on the epoch's last, G's loss every step.
    gan = tiny_gan()
    names: list[str] = []
    log = gan.log
    gan.log = lambda name, *args, **kwargs: (names.append(name), log(name, *args, **kwargs))
    trainer = framework_trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_val_batches=0,
        log_every_n_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    loader = DataLoader(TensorDataset(digits[:112], torch.zeros(112)), batch_size=16)
    trainer.fit(gan, loader)  # 7 batches: logging steps 3 and 6, plus the last (7)
    assert names.count("train/d_loss") == 3
    assert names.count("train/d_real_acc") == 3
    assert names.count("train/g_loss") == 7
    assert "train/d_loss" in trainer.callback_metrics  # short runs still report


def tiny_cvae(class_prior: bool, ex_post_prior: bool = False) -> VAE:
    return VAE(
        encoder=ConvEncoder(out_features=8, width=16, num_classes=3, label_input="channels"),
        decoder=ConvDecoder(latent_dim=4, width=16, out_activation=None, num_classes=3),
        optimizer=partial(torch.optim.Adam, lr=2e-3),
        latent_dim=4,
        num_classes=3,
        class_prior=class_prior,
        ex_post_prior=ex_post_prior,
    )


def test_a_learned_class_prior_is_what_the_kl_the_bound_and_samples_use(digits) -> None:
    vae = tiny_cvae(class_prior=True).eval()
    torch.manual_seed(0)
    with torch.no_grad():  # a prior far from N(0, I), different for each class
        vae.class_prior.weight.normal_(0, 1.5)
    x, y = digits[:6], torch.tensor([0, 1, 2, 0, 1, 2])
    mu, logvar = vae.encode(x, y)
    p_mu, p_logvar = vae.prior(y, mu)
    posterior = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    prior = torch.distributions.Normal(p_mu, torch.exp(0.5 * p_logvar))
    _, kl, _ = vae.elbo_terms(x, y)
    expected = torch.distributions.kl_divergence(posterior, prior).sum(1)
    assert torch.allclose(kl, expected, rtol=1e-4, atol=1e-4)
    # The k=1 importance bound is a one-sample ELBO: on average it equals the analytic one.
    with torch.no_grad():
        xs, ys = x.repeat(400, 1, 1, 1), y.repeat(400)
        log_px, kl, _ = vae.elbo_terms(xs, ys)
        elbo = (log_px - kl).view(400, 6).mean(0)
        single = vae.iwae_bound(xs, 1, labels=ys).view(400, 6).mean(0)
    assert torch.allclose(single, elbo, rtol=0.02), (single, elbo)
    # Samples of class c decode from p(z | c): the same noise, other classes, other images.
    noise = torch.randn(3, 4)
    shifted = vae.generate(noise, torch.tensor([0, 1, 2]))
    assert torch.allclose(
        shifted[0], vae.decode(p_mu[0] + torch.exp(0.5 * p_logvar[0]) * noise[0:1], y[:1])[0]
    )


def test_a_class_prior_starts_as_the_standard_normal_and_needs_classes(digits) -> None:
    with_prior, without = tiny_cvae(True).eval(), tiny_cvae(False).eval()
    without.load_state_dict(with_prior.state_dict(), strict=False)
    x, y = digits[:4], torch.tensor([0, 1, 2, 0])
    torch.manual_seed(1)
    a = with_prior.elbo_terms(x, y)[1]
    torch.manual_seed(1)
    b = without.elbo_terms(x, y)[1]
    assert torch.allclose(a, b)  # zeros: N(0, I) until it learns
    with pytest.raises(ConfigError, match=r"model\.class_prior=true needs classes"):
        VAE(encoder=ConvEncoder(out_features=8, width=16), latent_dim=4, class_prior=True,
            decoder=ConvDecoder(latent_dim=4, width=16, out_activation=None),
            optimizer=partial(torch.optim.Adam, lr=2e-3))  # fmt: skip


def test_ex_post_prior_samples_from_each_class_training_codes(digits: torch.Tensor) -> None:
    # Training fits one Gaussian per class to the posterior means of that epoch's batches;
    # samples of class c then decode codes drawn from class c's Gaussian, seeded as before.
    pl.seed_everything(0)
    vae = tiny_cvae(class_prior=False, ex_post_prior=True)
    seen: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # (epoch, codes, labels) trained on
    encode = vae.encode

    def recording_encode(x, labels=None):
        mu, logvar = encode(x, labels)
        if vae.training:
            seen.append((vae.current_epoch, mu.detach().clone(), labels.clone()))
        return mu, logvar

    vae.encode = recording_encode
    labels = torch.arange(96) % 3
    loader = DataLoader(TensorDataset(digits[:96], labels), batch_size=32)
    trainer = framework_trainer(accelerator="cpu", max_epochs=2, limit_val_batches=0,
                                logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(vae, loader)
    ex_post = vae.ex_post
    assert bool(ex_post.fitted) and int(ex_post.sums_epoch) == 1
    assert ex_post.count.tolist() == [32.0, 32.0, 32.0]  # the last epoch only, per class
    codes = torch.cat([mu for epoch, mu, _ in seen if epoch == 1])
    classes = torch.cat([y for epoch, _, y in seen if epoch == 1])
    for c in range(3):
        own = codes[classes == c].double()
        assert torch.allclose(ex_post.mean[c].double(), own.mean(0), atol=1e-5), c
        tril = ex_post.scale_tril[c].double()
        assert torch.allclose(tril @ tril.T, torch.cov(own.T), atol=1e-4), c
    vae.eval()
    noise = torch.randn(3, 4)
    y = torch.tensor([0, 1, 2])
    moved = ex_post.mean[y] + (ex_post.scale_tril[y] @ noise.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(vae.generate(noise, y), vae.decode(moved, y), atol=1e-6)
    a = vae.sample(4, generator=torch.Generator().manual_seed(3), labels=torch.tensor([2] * 4))
    b = vae.sample(4, generator=torch.Generator().manual_seed(3), labels=torch.tensor([2] * 4))
    assert torch.equal(a, b) and a.shape == (4, 1, 28, 28)


def test_ex_post_fit_recovers_a_known_gaussian_and_starts_each_epoch_over() -> None:
    from genlab.models.ex_post import ExPostGaussian

    torch.manual_seed(0)
    fitted = ExPostGaussian(classes=2, latent_dim=3)
    cov = torch.tensor([[1.0, 0.8, 0.0], [0.8, 1.0, 0.0], [0.0, 0.0, 0.25]])
    codes = torch.distributions.MultivariateNormal(torch.tensor([2.0, -1.0, 0.0]), cov)
    fitted.accumulate(torch.randn(500, 3) * 9, torch.zeros(500, dtype=torch.long), epoch=0)
    for _ in range(4):  # epoch 1 in four batches: epoch 0's sums are dropped
        fitted.accumulate(codes.sample((5000,)), torch.ones(5000, dtype=torch.long), epoch=1)
    fitted.fit(fitted.count, fitted.total, fitted.outer)
    assert fitted.count.tolist() == [0.0, 20000.0]
    assert torch.allclose(fitted.mean[0], torch.zeros(3)) and torch.equal(
        fitted.scale_tril[0], torch.eye(3)
    )  # no codes of class 0 this epoch: it keeps N(0, I)
    assert torch.allclose(fitted.mean[1], torch.tensor([2.0, -1.0, 0.0]), atol=0.05)
    tril = fitted.scale_tril[1]
    assert torch.allclose(tril @ tril.T, cov, atol=0.05)


def test_ex_post_prior_is_refused_under_dp() -> None:
    vae = tiny_cvae(class_prior=False, ex_post_prior=True)
    refused = r"model\.ex_post_prior=True does not combine.*model\.ex_post_prior=false"
    with pytest.raises(ConfigError, match=refused):
        vae.check_private_training()

"""Differentially private training: DP-SGD's step, the accountant, the budget, bad configs."""

from __future__ import annotations

import copy
import csv
import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import open_dict
from opacus.accountants import RDPAccountant
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm
from torch.utils.data import TensorDataset

from genlab.config.instantiate import instantiate_group
from genlab.config.validation import check_types
from genlab.data.loader import PoissonBatchSampler, ResumableLoader
from genlab.errors import ConfigError
from genlab.nets.conv import ConvEncoder
from genlab.privacy.callback import DifferentialPrivacy
from genlab.privacy.nets import make_private
from genlab.privacy.optimizer import check_per_sample
from genlab.train import run

DP = ["privacy.enabled=true", "debug=limit", "test=false"]


def _tiny_critic() -> nn.Module:
    return ConvEncoder(out_features=1, channels=1, image_size=28, width=8, norm="batch")


def _started(privacy: DifferentialPrivacy, net: nn.Module, batch_size: int = 4):
    """A private SGD(lr=1) optimizer over ``net``, started on a Poisson loader of 16 images."""
    optimizer = privacy.private_optimizer(torch.optim.SGD(net.parameters(), lr=1.0))
    loader = ResumableLoader(
        TensorDataset(torch.rand(16, 1, 28, 28)), batch_size, seed=0, poisson=True
    )
    privacy.start({"critic": net}, loader, max_epochs=1, steps_per_epoch=4)
    return optimizer


def _critic_loss(net: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.softplus(-net(real)).mean() + F.softplus(net(fake)).mean()


def test_dp_step_is_the_sum_of_clipped_per_image_gradients_plus_noise() -> None:
    """One "sample" of D's loss is real image i plus fake image i; each such gradient is
    clipped to max_grad_norm, the clipped ones summed, noise added, and the sum divided by
    the *expected* batch size."""
    torch.manual_seed(0)
    clip = 0.05
    privacy = DifferentialPrivacy(enabled=True, noise_multiplier=1.0, max_grad_norm=clip)
    net = make_private(_tiny_critic(), "discriminator")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in net.modules())
    reference = copy.deepcopy(net)
    optimizer = _started(privacy, net, batch_size=4)
    real, fake = torch.rand(5, 1, 28, 28), torch.rand(5, 1, 28, 28)  # 5 drawn, 4 expected

    # By hand: per-pair gradients of a copy, clipped, summed, / expected batch size.
    params = list(reference.parameters())
    expected = [torch.zeros_like(p) for p in params]
    norms = []
    for i in range(5):
        grads = torch.autograd.grad(
            _critic_loss(reference, real[i : i + 1], fake[i : i + 1]), params
        )
        norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
        norms.append(float(norm))
        for total, g in zip(expected, grads, strict=True):
            total += g * min(1.0, clip / float(norm)) / 4
    assert min(norms) > clip  # every pair was clipped: the test exercises the clipping

    def private_gradient(noise: float) -> list[torch.Tensor]:
        optimizer.noise_multiplier = noise
        optimizer.zero_grad(set_to_none=True)
        _critic_loss(net, real, fake).backward()
        check_per_sample(optimizer)
        optimizer.pre_step()  # clip, sum, noise, scale (the step itself would move net)
        return [p.grad.clone() for p in net.parameters()]

    for got, want in zip(private_gradient(0.0), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)

    privacy.budget.accountant.history = []  # forget the noiseless step (it spends infinite epsilon)
    noise = torch.cat(
        [(g - w).flatten() for g, w in zip(private_gradient(1.0), expected, strict=True)]
    )
    assert noise.std().item() == pytest.approx(1.0 * clip / 4, rel=0.1)  # sigma * C / B
    first = privacy.epsilon()
    private_gradient(1.0)
    assert math.isfinite(first) and 0 < first < privacy.epsilon()


def test_a_step_without_per_sample_gradients_is_refused() -> None:
    """Opacus' optimizer would quietly take a plain, non-private step."""
    privacy = DifferentialPrivacy(enabled=True)
    net = make_private(_tiny_critic(), "discriminator")
    optimizer = _started(privacy, net)
    privacy.stop()  # the per-sample hooks are gone: the backward records nothing
    _critic_loss(net, torch.rand(4, 1, 28, 28), torch.rand(4, 1, 28, 28)).backward()
    before = copy.deepcopy(net.state_dict())
    with pytest.raises(RuntimeError, match="non-private step"):
        optimizer.step()  # the DP optimizer checks before it clips, noises and steps
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert privacy.budget.steps == 0


def _epsilon_of(steps: int, sample_rate: float, noise: float = 1.0) -> float:
    """A target epsilon that ``steps`` private steps fit and one more would not."""
    accountant = RDPAccountant()
    accountant.history = [(noise, sample_rate, steps)]
    return accountant.get_epsilon(1e-5) * 1.0001


@pytest.mark.parametrize("on_budget", ["stop", "warn"])
def test_the_dp_optimizer_refuses_to_step_beyond_the_budget(on_budget: str) -> None:
    """The guard is in the optimizer itself: whoever calls step() (a model, a loop of its own)
    gets no private step once the budget is spent, and the trainer is asked to stop."""
    torch.manual_seed(0)
    target = _epsilon_of(2, sample_rate=4 / 16)  # _started: batches of 4 out of 16 images
    privacy = DifferentialPrivacy(
        enabled=True, noise_multiplier=1.0, target_epsilon=target, on_budget=on_budget
    )
    net = make_private(_tiny_critic(), "discriminator")
    optimizer = _started(privacy, net)
    stops: list[bool] = []
    optimizer.on_stop = lambda: stops.append(True)
    assert privacy.budget.max_steps == 2

    def step() -> bool:
        """One private step; whether it moved the net."""
        before = [p.detach().clone() for p in net.parameters()]
        optimizer.zero_grad(set_to_none=True)
        _critic_loss(net, torch.rand(4, 1, 28, 28), torch.rand(4, 1, 28, 28)).backward()
        optimizer.step()
        return any(not torch.equal(b, p) for b, p in zip(before, net.parameters(), strict=True))

    assert step() and step() and not stops  # within the budget
    if on_budget == "stop":
        assert not step() and not step()  # refused, however often it is asked
        assert privacy.budget.steps == 2 and privacy.epsilon() <= target
        assert stops == [True, True]
        assert all(p.grad_sample is None for p in net.parameters())  # nothing left over
    else:  # warn: the user chose to overspend
        assert step() and privacy.budget.steps == 3 and privacy.epsilon() > target
        assert not stops


class _PlainDP(pl.LightningModule):
    """A LightningModule that knows nothing of genlab: manual optimisation, its own hooks,
    two private steps per batch (so the budget runs out in the middle of a batch), and no
    way to skip a batch when the trainer is asked to stop."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.critic = ConvEncoder(out_features=1, channels=1, image_size=28, width=8)
        self.weights: list[list[torch.Tensor]] = []  # the critic's after every step() call
        self.stepped = 0  # steps the wrapped SGD actually took

    def private_nets(self) -> dict[str, nn.Module]:
        return {"critic": self.critic}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        optimizer = torch.optim.SGD(self.critic.parameters(), lr=0.1)
        optimizer.register_step_post_hook(lambda *_: setattr(self, "stepped", self.stepped + 1))
        return optimizer

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        pass  # overridden without super() and without returning -1: the batch always runs

    def training_step(self, batch, batch_idx: int) -> None:
        optimizer = self.optimizers()
        for _ in range(2):
            optimizer.zero_grad()
            self.manual_backward(F.softplus(-self.critic(batch[0])).mean())
            optimizer.step()
            self.weights.append([p.detach().clone() for p in self.critic.parameters()])


def test_a_plain_lightning_module_takes_no_private_step_beyond_the_budget() -> None:
    torch.manual_seed(0)
    batch_size, images = 8, 64
    target = _epsilon_of(3, sample_rate=batch_size / images)
    privacy = DifferentialPrivacy(enabled=True, noise_multiplier=1.0, target_epsilon=target)
    model = _PlainDP()
    privacy.prepare(model)
    loader = ResumableLoader(
        TensorDataset(torch.rand(images, 1, 28, 28)), batch_size, seed=0, poisson=True
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        min_epochs=1,  # a stop request waits for the epoch's end: every batch runs
        limit_train_batches=4,
        callbacks=[privacy],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, loader)
    # Batch 0: steps 1 and 2. Batch 1: step 3, then the 4th is refused mid-batch. Batches 2
    # and 3 still run (nothing skips them) and all their steps are refused.
    assert model.stepped == 3 and privacy.budget.steps == 3
    assert privacy.epsilon() <= target and trainer.should_stop
    assert len(model.weights) == 8
    moved = [
        any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
        for before, after in zip(model.weights, model.weights[1:], strict=False)
    ]
    assert moved == [True, True] + [False] * 5


def test_unsupported_layers_are_named() -> None:
    net = _tiny_critic()
    spectral_norm(net.net[0])
    with pytest.raises(ConfigError, match=r"discriminator's layers net\.0 .*spectral"):
        make_private(net, "discriminator")


def test_a_loader_without_poisson_sampling_is_refused() -> None:
    privacy = DifferentialPrivacy(enabled=True)
    net = make_private(_tiny_critic(), "discriminator")
    privacy.private_optimizer(torch.optim.SGD(net.parameters(), lr=1.0))
    shuffled = ResumableLoader(TensorDataset(torch.rand(16, 1, 28, 28)), 4, seed=0)
    with pytest.raises(ConfigError, match=r"data\.poisson_sampling=true"):
        privacy.start({"critic": net}, shuffled, max_epochs=1, steps_per_epoch=4)


def test_poisson_batches_vary_and_resume_exactly() -> None:
    sampler = PoissonBatchSampler(size=1000, batch_size=50, seed=3)
    epoch0 = list(sampler)
    sizes = [len(b) for b in epoch0]
    assert len(epoch0) == 20 and len(set(sizes)) > 3  # sizes vary around 50
    assert 40 < sum(sizes) / len(sizes) < 60
    assert list(sampler) != epoch0  # the next pass is a new epoch
    sampler.set_epoch(0)
    sampler.start = 7  # what load_state_dict does for a checkpoint after 7 batches
    assert list(sampler) == epoch0[7:]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=wgan_gp"], "model.gradient_penalty=10.0 does not combine"),
        # Plain DCGAN plus one setting: the default GAN already has two DP refuses (R1, mbstd).
        (["model=dcgan", "model.spectral_norm=true"], "model.spectral_norm=true does not combine"),
        (["model=dcgan", "model.r1_gamma=1"], "model.r1_gamma=1 does not combine"),
        (["model=dcgan", "model.discriminator.minibatch_std=true"], "minibatch_std=true does"),
        (["model=dcgan", "model.gradient_clip_val=1.0"], "gradient_clip_val=1.0 does not"),
        (["model=gan"], "does not combine with privacy.enabled=true"),
        (["model=vae", "model.likelihood=gaussian"], "model.gaussian_sigma=0.1"),
        (["model=vae", "model.free_bits=0.1"], "model.free_bits=0"),
        (["model=vaegan"], "VAEGAN does not declare which nets see real images"),
        (["privacy.noise_multiplier=null"], "set privacy.target_epsilon"),
    ],
)
def test_settings_dp_cannot_honour_are_refused(make_cfg, overrides, message) -> None:
    """Refused by the privacy component before any data is loaded (train.py calls prepare
    right after building the model)."""
    cfg = make_cfg(*overrides, "privacy.enabled=true")
    with pytest.raises(ConfigError, match=message):
        instantiate_group(cfg, "privacy").prepare(instantiate_group(cfg, "model"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "privacy.on_budget=stp",
            r"privacy\.on_budget='?stp'? needs one of stop, warn \(did you mean stop",
        ),
        ("privacy.noise_multiplier=0", r"must be > 0 \(without noise, clipping alone gives no"),
        ("privacy.max_grad_norm=0", r"privacy\.max_grad_norm=0 must be > 0"),
        ("privacy.target_epsilon=-1", r"privacy\.target_epsilon=-1 must be > 0"),
        ("privacy.delta=1", r"privacy\.delta=1 must be in \(0, 1\) \(below 1/N"),
        ("privacy.max_grad_norm=abc", r"privacy\.max_grad_norm='abc' \(str\): .* needs float"),
    ],
)
def test_privacy_values_are_checked_from_the_constructors_hints(make_cfg, override, message):
    """The rules are Annotated hints on DifferentialPrivacy's constructor, read by the start-up
    check of every config group (and by the trust check of a stored config)."""
    cfg = make_cfg(override)
    with pytest.raises(ConfigError, match=message):
        check_types(cfg.privacy, "privacy")
    check_types(make_cfg("privacy.enabled=true").privacy, "privacy")  # the defaults pass


def test_an_enabled_privacy_built_in_python_checks_its_hints_too() -> None:
    """Not only configs: a noise of 0 would train without any privacy."""
    with pytest.raises(ConfigError, match=r"privacy\.noise_multiplier=0 must be > 0 \(without"):
        DifferentialPrivacy(enabled=True, noise_multiplier=0)
    with pytest.raises(ConfigError, match=r"privacy\.on_budget='?stp'? needs one of stop, warn"):
        DifferentialPrivacy(enabled=True, on_budget="stp")


def test_on_device_batches_cannot_be_poisson_sampled(make_cfg) -> None:
    cfg = make_cfg("privacy.enabled=true", "data.on_device=true")
    assert cfg.data.poisson_sampling is True  # follows privacy.enabled
    with pytest.raises(ConfigError, match=r"data\.on_device=false"):
        instantiate_group(cfg, "data")


def _epsilons(run_dir: Path) -> list[float]:
    with open(run_dir / "metrics.csv") as f:
        return [float(r["train/epsilon"]) for r in csv.DictReader(f) if r.get("train/epsilon")]


@pytest.mark.parametrize("model", ["dcgan", "vae"])  # DP GANs are plain DCGANs (no minibatch-std)
def test_dp_training_logs_a_rising_epsilon_and_meets_its_target(make_cfg, model: str) -> None:
    """noise_multiplier=null: the noise is chosen so that max_epochs spend target_epsilon."""
    cfg = make_cfg(
        f"model={model}",
        *DP,
        "privacy.noise_multiplier=null",
        "privacy.target_epsilon=8",
    )
    run(cfg)
    run_dir = Path(cfg.paths.output_dir)
    epsilons = _epsilons(run_dir)
    assert len(epsilons) == 2 and 0 < epsilons[0] < epsilons[1] <= 8
    assert epsilons[1] > 7.5  # the whole budget is used, not a fraction of it
    with open(run_dir / "metrics.csv") as f:  # the LR monitor names optimizers by class
        assert "lr-DPOptimizer" in next(csv.reader(f))
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert sum(steps for _, _, steps in ckpt["privacy"]["history"]) == 10  # 2 epochs x 5
    assert ckpt["privacy"]["epsilon"] == pytest.approx(epsilons[1])
    assert not any("running_mean" in k for k in ckpt["state_dict"] if "discriminator" in k)


def test_training_stops_when_the_budget_is_spent(make_cfg) -> None:
    cfg = make_cfg("model=dcgan", *DP, "privacy.noise_multiplier=1.0")
    rate = cfg.data.batch_size / 550  # 1% of MNIST's 55k training split
    accountant = RDPAccountant()
    accountant.history = [(1.0, rate, 3)]
    target = accountant.get_epsilon(1e-5) * 1.0001  # three steps fit, a fourth would not
    with open_dict(cfg):
        cfg.privacy.target_epsilon = target
    run(cfg)
    ckpt = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert sum(steps for _, _, steps in ckpt["privacy"]["history"]) == 3
    assert ckpt["privacy"]["epsilon"] <= target
    assert ckpt["epoch"] == 0  # stopped inside the first of two epochs


def test_privacy_table_reads_quality_budget_and_audit(tmp_path: Path) -> None:
    """scripts/privacy_table.py: one row per run from result.json, the checkpoint's accountant
    and the audit next to the run (an existing audit is reused, not rerun)."""
    import json
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from privacy_table import row

    run_dir = tmp_path / "vae_eps1"
    (run_dir / "audit").mkdir(parents=True)
    checkpoint = run_dir / "best.ckpt"
    torch.save(
        {
            "genlab_config": {"model": {"_target_": "genlab.models.vae.VAE"}},
            "privacy": {"epsilon": 0.9971, "noise_multiplier": 1.0059},
        },
        checkpoint,
    )
    metrics = {"test/fid": 33.29, "test/nll_nats": 144.75, "test/classes_covered": 10.0}
    (run_dir / "result.json").write_text(
        json.dumps({"best_model_path": str(checkpoint), "metrics": metrics, "seconds": 1658})
    )
    audit = {"memorization/copying_ct": 23.46, "memorization/pixels_closer_than_heldout": 0.004}
    (run_dir / "audit" / "metrics.json").write_text(json.dumps({"metrics": audit}))
    cells = row(run_dir)
    assert cells[:4] == ["VAE", "1.00", "1.006", "33.29"]
    assert "144.8" in cells and "23.5" in cells and "- / 0.00" in cells and "28" in cells


def test_a_conditional_gan_trains_privately_with_its_labels(make_cfg) -> None:
    """Labels are part of each private example: the projection discriminator's class embedding
    (zero at the start) learns from clipped, noised per-example gradients like D's other
    weights, and the budget is accounted as for the unconditional GAN."""
    cfg = make_cfg(
        "model=cgan",
        *DP,
        "model.discriminator.minibatch_std=false",  # mixes a batch's examples
        "model.r1_gamma=0",  # a double backward
        "privacy.noise_multiplier=1.0",
    )
    run(cfg)
    run_dir = Path(cfg.paths.output_dir)
    epsilons = _epsilons(run_dir)
    assert len(epsilons) == 2 and 0 < epsilons[0] < epsilons[1]
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    (embedding,) = [v for k, v in state.items() if k.endswith("discriminator.embed.weight")]
    assert embedding.shape[0] == 10 and embedding.abs().sum() > 0

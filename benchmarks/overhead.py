"""What does the template cost? The same training step as a plain PyTorch loop and under Lightning.

    python benchmarks/overhead.py                              # DCGAN and VAE on MNIST, CPU
    python benchmarks/overhead.py --models gan --batches 100 --repeats 5
    python benchmarks/overhead.py --accelerator gpu model.compile=true trainer.precision=bf16-mixed

For each model (its ``conf/model`` config, MNIST, ``data.batch_size``) three variants train the
same nets on the same batches from the same seed:

  plain      a hand-written PyTorch loop: zero_grad / backward / step, no Lightning
  barebones  genlab's LightningModule under ``Trainer(barebones=True)``
  default    the module under the project's default callbacks and CSV logger

Each run times ``--batches`` training batches after ``--warmup`` (data loading included,
epoch-end work such as checkpoints, sample grids and FID excluded: see docs/performance.md for their
share of a run). Runs are interleaved, variant order rotating per repeat, so a noisy shared
machine slows all variants alike; the ratios to ``plain`` use runs of the same repeat. Prints
images/s (median and range) and the ratios ``barebones/plain`` and ``default/plain``; goal:
>= 0.95 and >= 0.90. Extra arguments are Hydra overrides of ``conf/train.yaml``.
No asserts: a benchmark reports, tests check behaviour.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
import genlab  # noqa: E402, F401  (registers resolvers)
from genlab.callbacks.framework import configure_nets, framework_callbacks  # noqa: E402
from genlab.config.instantiate import instantiate_list  # noqa: E402

VARIANTS = ("plain", "barebones", "default")


def compose_cfg(model: str, accelerator: str, overrides: list[str], out: Path) -> DictConfig:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            [
                f"model={model}",
                f"trainer.accelerator={accelerator}",
                "trainer.devices=1",
                "data.num_workers=0",
                "extras.print_config=false",
                *overrides,
            ],
        )
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    return cfg


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer(pl.Callback):
    """Wall time from the end of the last warm-up batch to the end of the last batch."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end = warmup, None, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        synchronize(pl_module.device)
        now = time.perf_counter()
        if batch_idx == self.warmup - 1:
            self.start = now
        self.end = now


# --- (a) the plain PyTorch loop ----------------------------------------------------------------
def gan_step(model, opts, x: torch.Tensor) -> None:
    """DCGAN, non-saturating loss: the update a researcher writes by hand."""
    generator, discriminator = model.generator, model.discriminator
    opt_g, opt_d = opts
    real = x * 2 - 1
    fake = generator(torch.randn(len(x), model.latent_dim, device=x.device))
    real_logits, fake_logits = discriminator(real), discriminator(fake.detach())
    d_loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_d.step()
    discriminator.requires_grad_(False)  # G's step needs no gradients for D's weights
    g_loss = F.softplus(-discriminator(fake)).mean()
    opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    opt_g.step()
    discriminator.requires_grad_(True)


def vae_step(model, opts, x: torch.Tensor) -> None:
    """Bernoulli VAE, one-sample ELBO."""
    mu, logvar = model.encoder(x).chunk(2, dim=1)
    z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
    logits = model.decoder(z)
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
    loss = (recon + kl).mean()
    (opt,) = opts
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


PLAIN_STEPS: dict[str, Callable] = {"gan": gan_step, "vae": vae_step}


def run_plain(cfg: DictConfig, datamodule, args) -> tuple[float, float]:
    """images/s, and the share of the time spent waiting for batches."""
    device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")
    pl.seed_everything(cfg.seed, verbose=False)
    model = instantiate(cfg.model).to(device).train()
    configure_nets(model)  # compile / channels_last, exactly as train.py's callback would
    opts = [c["optimizer"] for c in model.configure_optimizers()]
    step = PLAIN_STEPS[args.family]
    autocast = torch.autocast(device.type, torch.bfloat16, enabled="bf16" in args.precision)
    batches = iter(datamodule.train_dataloader())
    start, data_seconds = time.perf_counter(), 0.0
    for i in range(args.warmup + args.batches):
        if i == args.warmup:
            synchronize(device)
            start, data_seconds = time.perf_counter(), 0.0
        fetch = time.perf_counter()
        x = next(batches)[0].to(device, non_blocking=True)
        data_seconds += time.perf_counter() - fetch
        with autocast:
            step(model, opts, x)
    synchronize(device)
    seconds = time.perf_counter() - start
    return args.batches * cfg.data.batch_size / seconds, data_seconds / seconds


# --- (b) and (c): the LightningModule under a Trainer ------------------------------------------
def run_lightning(cfg: DictConfig, datamodule, args, barebones: bool) -> float:
    pl.seed_everything(cfg.seed, verbose=False)
    model = instantiate(cfg.model)
    timer = StepTimer(args.warmup)
    limits = {
        "max_epochs": 1,
        "limit_train_batches": args.warmup + args.batches,
        "limit_val_batches": 0,
        "num_sanity_val_steps": 0,
    }
    if barebones:
        trainer = pl.Trainer(
            accelerator=cfg.trainer.accelerator,
            devices=1,
            precision=cfg.trainer.precision,
            barebones=True,
            callbacks=[timer, *framework_callbacks()],
            **limits,
        )
    else:
        callbacks = [*instantiate_list(cfg.callbacks), timer, *framework_callbacks()]
        loggers = instantiate_list(cfg.logger)
        trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers, **limits)
    trainer.fit(model, datamodule=datamodule)
    return args.batches * cfg.data.batch_size / (timer.end - timer.start)


def measure(model_name: str, args, overrides: list[str]) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_cfg(model_name, args.accelerator, overrides, Path(tmp))
        args.family = "vae" if "VAE" in cfg.model._target_ else "gan"
        args.precision = str(cfg.trainer.precision)
        datamodule = instantiate(cfg.data)
        datamodule.prepare_data()
        datamodule.setup("fit")
        data_shares: list[float] = []

        def plain() -> float:
            speed, share = run_plain(cfg, datamodule, args)
            data_shares.append(share)
            return speed

        runners = {
            "plain": plain,
            "barebones": lambda: run_lightning(cfg, datamodule, args, barebones=True),
            "default": lambda: run_lightning(cfg, datamodule, args, barebones=False),
        }
        speeds: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for r in range(args.repeats):
            order = VARIANTS[r % 3 :] + VARIANTS[: r % 3]  # rotate: no variant always first
            for variant in order:
                speeds[variant].append(runners[variant]())
                print(
                    f"  {model_name} repeat {r + 1} {variant:9s} {speeds[variant][-1]:8.0f} img/s"
                )
        on_device = cfg.data.get("on_device", False)
    print(f"  {model_name}: waiting for data is {statistics.median(data_shares):.1%} of the "
          f"plain loop's time (data.on_device={on_device})")  # fmt: skip
    return speeds


def spread(values: list[float], fmt: str) -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["dcgan", "vae"])
    parser.add_argument("--batches", type=int, default=50, help="timed batches per run")
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches first")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"])
    args, overrides = parser.parse_known_args()
    warnings.filterwarnings("ignore")  # barebones' "self.log is disabled", dataloader hints
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        __import__("logging").getLogger(name).setLevel("ERROR")

    device = torch.cuda.get_device_name() if args.accelerator == "gpu" else "CPU"
    print(f"torch {torch.__version__}, lightning {pl.__version__}, {device}, "
          f"{torch.get_num_threads()} threads; overrides: {overrides or 'none'}")  # fmt: skip
    rows = []
    for model_name in args.models:
        speeds = measure(model_name, args, overrides)
        plain = speeds["plain"]
        row = [f"`{model_name}`", spread(plain, ".0f")]
        for variant in ("barebones", "default"):
            ratios = [v / p for v, p in zip(speeds[variant], plain, strict=True)]
            row += [spread(speeds[variant], ".0f"), spread(ratios, ".3f")]
        rows.append(row)

    header = ["model", "plain img/s", "barebones img/s", "barebones/plain",
              "default img/s", "default/plain"]  # fmt: skip
    print(f"\nimages/s: median (min-max) of {args.repeats} interleaved runs, "
          f"{args.batches} batches each after {args.warmup} warm-up\n")  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()

"""Throughput with 1 and 2 (or more) DDP processes: images/s of the whole job.

    python benchmarks/ddp_scaling.py                        # CPU: 1 vs 2 gloo processes
    python benchmarks/ddp_scaling.py --accelerator gpu --devices 1 2 4 8

Each run trains ``--batches`` batches per process (``data.batch_size`` each, so the global
batch grows with the process count, as in ``trainer=ddp``) after ``--warmup``, with
``ddp_spawn`` for more than one process, and times them on rank 0. Prints images/s and the
speed-up over one process. On a CPU the processes share the cores that one process already
uses through intra-op threads, so expect little: DDP pays off across GPUs and nodes.
Extra arguments are Hydra overrides of ``conf/train.yaml``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import StepTimer, compose_cfg

from genlab.callbacks.framework import framework_callbacks


class RankZeroTimer(StepTimer):
    """A StepTimer that writes its result to a file: spawned ranks cannot return it."""

    def __init__(self, warmup: int, path: Path) -> None:
        super().__init__(warmup)
        self.path = path

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self.path.write_text(json.dumps({"seconds": self.end - self.start}))


def images_per_second(model: str, devices: int, args, overrides: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_cfg(model, args.accelerator, overrides, Path(tmp))
        datamodule = instantiate(cfg.data)
        datamodule.prepare_data()
        pl.seed_everything(cfg.seed, verbose=False)
        out = Path(tmp) / "timing.json"
        trainer = pl.Trainer(
            accelerator=args.accelerator,
            devices=devices,
            strategy="ddp_spawn_find_unused_parameters_true" if devices > 1 else "auto",
            precision=cfg.trainer.precision,
            barebones=True,
            max_epochs=1,
            limit_train_batches=args.warmup + args.batches,
            limit_val_batches=0,
            callbacks=[RankZeroTimer(args.warmup, out), *framework_callbacks()],
        )
        trainer.fit(instantiate(cfg.model), datamodule=datamodule)
        seconds = json.loads(out.read_text())["seconds"]
    return devices * args.batches * cfg.data.batch_size / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["dcgan", "vae"])
    parser.add_argument("--devices", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"])
    args, overrides = parser.parse_known_args()
    warnings.filterwarnings("ignore")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads in the parent; "
          f"{args.batches} batches per process after {args.warmup} warm-up\n")  # fmt: skip
    print("| model | processes | images/s | speed-up |")
    print("|---|---|---|---|")
    for model in args.models:
        base = None
        for devices in args.devices:
            ips = images_per_second(model, devices, args, overrides)
            base = base or ips
            print(f"| `{model}` | {devices} | {ips:.0f} | {ips / base:.2f} |", flush=True)


if __name__ == "__main__":
    main()

"""Peak memory per batch size: CPU RSS and, on a GPU, the largest allocation.

    python benchmarks/memory.py                                   # gan, vae, vaegan; CPU
    python benchmarks/memory.py --models gan --batch-sizes 64 256 1024 --accelerator gpu

Each (model, batch size) trains ``--steps`` batches of MNIST in a fresh process (peak RSS never
goes down, so sharing a process would hide the smaller sizes) under ``Trainer(barebones=True)``.
Prints peak RSS before training (Python, torch, the data) and after, and the GPU's
``max_memory_allocated``. Extra arguments are Hydra overrides, e.g. ``data.image_size=64``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure_one(model: str, batch_size: int, steps: int, accelerator: str, overrides) -> dict:
    """Runs in the child process."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import pytorch_lightning as pl
    import torch
    from hydra.utils import instantiate
    from overhead import compose_cfg

    from genlab.callbacks.framework import framework_callbacks

    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_cfg(model, accelerator, [f"data.batch_size={batch_size}", *overrides], tmp)
        datamodule = instantiate(cfg.data)
        datamodule.prepare_data()
        datamodule.setup("fit")
        before = peak_rss_mib()
        pl.seed_everything(0, verbose=False)
        trainer = pl.Trainer(
            accelerator=accelerator,
            devices=1,
            precision=cfg.trainer.precision,
            barebones=True,
            max_steps=-1,
            max_epochs=1,
            limit_train_batches=steps,
            limit_val_batches=0,
            callbacks=framework_callbacks(),  # compile / channels_last as in train.py
        )
        trainer.fit(instantiate(cfg.model), datamodule=datamodule)
        gpu = torch.cuda.max_memory_allocated() / 2**20 if accelerator == "gpu" else None
    return {"rss_before": before, "rss_peak": peak_rss_mib(), "gpu_peak": gpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["dcgan", "vae", "vaegan"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[32, 128, 512])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)  # model, batch size
    args, overrides = parser.parse_known_args()
    if args.child:
        result = measure_one(args.child[0], int(args.child[1]), args.steps, args.accelerator,
                             overrides)  # fmt: skip
        print("RESULT " + json.dumps(result))
        return

    print(f"peak memory after {args.steps} training batches; overrides: {overrides or 'none'}\n")
    print("| model | batch size | RSS before training (MiB) | peak RSS (MiB) | GPU peak (MiB) |")
    print("|---|---|---|---|---|")
    for model in args.models:
        for batch_size in args.batch_sizes:
            cmd = [sys.executable, __file__, "--child", model, str(batch_size),
                   "--steps", str(args.steps), "--accelerator", args.accelerator, *overrides]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                print(f"| `{model}` | {batch_size} | failed: {proc.stderr.strip()[-200:]} | | |")
                continue
            r = json.loads(line[len("RESULT ") :])
            gpu = "-" if r["gpu_peak"] is None else f"{r['gpu_peak']:.0f}"
            print(f"| `{model}` | {batch_size} | {r['rss_before']:.0f} | {r['rss_peak']:.0f} "
                  f"| {gpu} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

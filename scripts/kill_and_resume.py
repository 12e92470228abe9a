"""Kill ``python train.py`` with SIGTERM mid-epoch, resume it, and compare with a run that was
never interrupted: the final weights and every final metric must be identical.

    python scripts/kill_and_resume.py                 # DCGAN, 3 short epochs (~2 min on 2 cores)
    python scripts/kill_and_resume.py --model vae
    python scripts/kill_and_resume.py --tiny          # tiny nets: what the test suite runs

Exit status 0 when identical, 1 when not, 2 when the signal came too late to test anything.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
COMMON = [
    "trainer=cpu",
    "trainer.max_epochs=3",
    "++trainer.limit_train_batches=40",
    "++trainer.limit_val_batches=4",
    "++trainer.deterministic=true",
    "data.train_fraction=0.1",
    "data.augment=true",
    "data.num_workers=0",
    "callbacks.fid.num_samples=500",
    "callbacks.fid.test_num_samples=1000",
    "callbacks.progress_bar=null",
    "extras.print_config=false",
]
TINY = {
    "gan": ["model.generator.width=8", "model.discriminator.width=8", "model.latent_dim=8"],
    "vae": ["model.encoder.width=8", "model.decoder.width=8", "model.latent_dim=4"],
}


def train(*args: str, wait: bool = True) -> subprocess.Popen | subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "train.py"), *args]
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    if wait:
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def where(ckpt: Path) -> tuple[int, int]:
    state = torch.load(ckpt, weights_only=True)
    progress = state["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["processed"]
    return state["epoch"], progress


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gan", choices=sorted(TINY))
    parser.add_argument("--tiny", action="store_true", help="tiny nets and batches (tests)")
    parser.add_argument("--delay", type=float, default=1.0, help="s after epoch 0's checkpoint")
    parser.add_argument("--out", default=None, help="folder for the runs (default: a temp dir)")
    args = parser.parse_args()
    overrides = [f"model={args.model}", *COMMON]
    if args.tiny:
        overrides += [
            *TINY[args.model],
            "data.batch_size=16",
            "callbacks.fid.num_real=256",
            "callbacks.fid.test_num_samples=256",
        ]
    out = Path(args.out or tempfile.mkdtemp(prefix="kill_and_resume_"))
    straight, stopped = out / "straight", out / "stopped"

    start = time.perf_counter()
    done = train(*overrides, f"hydra.run.dir={straight}")
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        return 1
    print(f"uninterrupted run: {time.perf_counter() - start:.0f} s")

    proc = train(*overrides, f"hydra.run.dir={stopped}", wait=False)
    last = stopped / "checkpoints" / "last.ckpt"
    while not last.exists() and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(args.delay)
    proc.send_signal(signal.SIGTERM)
    stderr = proc.communicate()[1]
    if proc.returncode != 128 + signal.SIGTERM:
        print(f"train.py exited with {proc.returncode}, not 143 (stopped by SIGTERM):")
        print(stderr[-3000:])
        return 2
    epoch, batches = where(last)
    print(f"SIGTERM: stopped in epoch {epoch} after {batches} of its 40 batches, exit 143")

    resumed = train(f"resume={stopped}", f"hydra.run.dir={out / 'resume_log'}")
    if resumed.returncode != 0:
        print(resumed.stderr[-3000:], file=sys.stderr)
        return 1

    a, b = (
        {k: v for k, v in json.loads((d / "result.json").read_text())["metrics"].items()
         if not k.endswith("_seconds")}  # wall-clock timings are not results
        for d in (straight, stopped)
    )  # fmt: skip
    wa = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    wb = torch.load(last, weights_only=True)["state_dict"]
    same_weights = wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    print(f"\n{'metric':<24}{'uninterrupted':>16}{'killed+resumed':>16}")
    for key in sorted(a):
        print(f"{key:<24}{a[key]:>16.6f}{b.get(key, float('nan')):>16.6f}")
    print(f"\nfinal weights identical: {same_weights}; metrics identical: {a == b}")
    return 0 if same_weights and a == b else 1


if __name__ == "__main__":
    sys.exit(main())

"""Requeue a SLURM training job twice and compare it with one that ran straight through.

    scripts/slurm_local.sh up                        # or any SLURM you may submit to
    python scripts/slurm_requeue_demo.py             # default GAN, 3 short epochs, ~3 min on 2 cores
    python scripts/slurm_requeue_demo.py --figure docs/figures/slurm_requeue_loss.png

Two ``scripts/slurm/train.sbatch`` jobs with the same seed: a reference, and one that this script
stops with ``scontrol requeue`` (what pre-emption with PreemptMode=REQUEUE does) after
``--at`` training steps each. SLURM holds a requeued job for about two minutes; the script
releases it at once (``scontrol update StartTime=now``). The requeued job continues from its
``last.ckpt`` in its own run folder. Prints whether the ``metrics.csv`` rows and the final
weights are identical, and draws both loss curves with the requeue points marked.

Exit status 0 when identical, 1 when not.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from genlab.resume.slurm import FINISHED_STATES, job_fields

ROOT = Path(__file__).resolve().parents[1]
SBATCH = ROOT / "scripts" / "slurm" / "train.sbatch"
COMMON = [
    "trainer=cpu",
    "trainer.max_epochs=3",
    "++trainer.limit_train_batches=40",
    "++trainer.limit_val_batches=4",
    "++trainer.log_every_n_steps=1",
    "++trainer.deterministic=true",
    "data.train_fraction=0.1",
    "data.num_workers=0",
    "callbacks.fid.num_samples=500",
    "callbacks.fid.test_num_samples=1000",
    "callbacks.progress_bar=null",
    "extras.print_config=false",
    "test=false",
]
DONE = FINISHED_STATES


def submit(log_dir: Path, extra: list[str]) -> str:
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}  # fmt: skip
    out = subprocess.run(
        ["sbatch", "--parsable", "--cpus-per-task=1", "--mem=4G", "--time=30",
         f"--output={log_dir}/slurm-%j.out", str(SBATCH), *COMMON, *extra,
         f"paths.log_dir={log_dir}"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip().split(";")[0]


def job_state(job: str) -> tuple[str, str]:
    fields = job_fields(job) or {}
    return fields.get("JobState", "UNKNOWN"), fields.get("Reason", "")


def run_dir(log_dir: Path) -> Path | None:
    runs = sorted((log_dir / "train" / "runs").glob("*"))
    return runs[0] if runs else None


def rows(folder: Path) -> list[dict[str, str]]:
    """metrics.csv's rows, but for wall-clock columns (val/fid_seconds)."""
    with open(folder / "metrics.csv") as f:
        return [
            {k: v for k, v in r.items() if not k.endswith("_seconds")} for r in csv.DictReader(f)
        ]


def train_steps(folder: Path | None) -> int:
    if folder is None or not (folder / "metrics.csv").is_file():
        return 0
    return sum(1 for r in rows(folder) if r.get("train/g_loss"))


def loss_curve(folder: Path) -> tuple[list[int], list[float]]:
    steps, losses = [], []
    for r in rows(folder):
        if r.get("train/g_loss"):
            steps.append(int(r["step"]))
            losses.append(float(r["train/g_loss"]))
    return steps, losses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--at", type=int, nargs="+", default=[30, 75],
                        help="requeue after this many logged training steps (each in turn)")  # fmt: skip
    parser.add_argument("--figure", type=Path, default=None, help="save the loss curves here")
    parser.add_argument("--keep", type=Path, default=None, help="run here, not in a temp dir")
    args = parser.parse_args()

    base = args.keep or Path(tempfile.mkdtemp(prefix="genlab_slurm_demo_"))
    reference = submit(base / "reference", [])
    requeued = submit(base / "requeued", [])
    print(f"jobs {reference} (reference) and {requeued} (requeued), under {base}")
    pending = list(args.at)
    resumed_at: list[int] = []
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        states = {job: job_state(job) for job in (reference, requeued)}
        if all(state in DONE for state, _ in states.values()):
            break
        state, reason = states[requeued]
        folder = run_dir(base / "requeued")
        if pending and state == "RUNNING" and train_steps(folder) >= pending[0]:
            print(f"scontrol requeue {requeued} after {train_steps(folder)} logged steps")
            subprocess.run(["scontrol", "requeue", requeued], check=True)
            pending.pop(0)
        if state == "PENDING" and reason == "BeginTime":
            # The stopped job's last.ckpt: the step the next start continues from.
            ckpt = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)
            # Batches trained (a GAN's global_step counts both optimizers' steps).
            done = ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["processed"]
            resumed_at.append(int(done))
            print(f"  stopped with last.ckpt after {done} batches; released")
            subprocess.run(["scontrol", "update", f"JobId={requeued}", "StartTime=now"])
        time.sleep(1)
    else:
        subprocess.run(["scancel", reference, requeued])
        print(f"jobs not done in 30 minutes; logs under {base}")
        return 1

    ref_dir, req_dir = run_dir(base / "reference"), run_dir(base / "requeued")
    same_rows = rows(ref_dir) == rows(req_dir)
    a = torch.load(ref_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(req_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    same_weights = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    print(f"states: {states}")
    print(f"requeues: {len(resumed_at)}, resumed at steps {resumed_at}")
    print(f"metrics.csv rows identical: {same_rows} ({len(rows(req_dir))} rows)")
    print(f"final weights identical (torch.equal): {same_weights}")

    if args.figure is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 3.2))
        steps, losses = loss_curve(ref_dir)
        ax.plot(steps, losses, color="0.75", lw=4, label="reference job (never stopped)")
        steps, losses = loss_curve(req_dir)
        starts = [0, *resumed_at, max(steps) + 1]
        for n, (lo, hi) in enumerate(itertools.pairwise(starts)):
            part = [(s, v) for s, v in zip(steps, losses, strict=True) if lo <= s < hi]
            if part:
                ax.plot(*zip(*part, strict=True), lw=1.2, label=f"requeued job, start {n + 1}")
        for step in resumed_at:
            ax.axvline(step, color="k", ls=":", lw=1)
        ax.set_xlabel("training step")
        ax.set_ylabel("train/g_loss")
        ax.set_title(f"Requeued {len(resumed_at)}x by SLURM: rows identical={same_rows}, "
                     f"weights identical={same_weights}", fontsize=9)  # fmt: skip
        ax.legend(fontsize=8)
        fig.tight_layout()
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.figure, dpi=110)
        print(f"figure: {args.figure}")
    return 0 if same_rows and same_weights else 1


if __name__ == "__main__":
    sys.exit(main())

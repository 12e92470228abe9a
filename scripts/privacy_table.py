"""Tabulate quality, privacy budget and memorization of finished training runs.

    python train.py experiment=dp_vae_mnist hydra.run.dir=outputs/dp/vae_eps10
    python train.py experiment=dp_vae_mnist privacy.target_epsilon=1 hydra.run.dir=...
    python train.py experiment=dp_vae_mnist privacy.enabled=false hydra.run.dir=...
    python scripts/privacy_table.py outputs/dp/*          # audits each run once, then the table

For each run directory: the test metrics its own ``trainer.test`` logged on the best checkpoint
(``result.json``: FID, precision/recall and class coverage of 10k samples; the IWAE NLL for
VAEs), the epsilon spent (the checkpoint's accountant) and the memorization audit of that
checkpoint (``eval.py metrics=[memorization] num_samples=5000``, written to ``<run>/audit`` and
reused on later calls).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from genlab.checkpoints.keys import CONFIG_KEY, PRIVACY_KEY

ROOT = Path(__file__).resolve().parents[1]


def audit(run_dir: Path, checkpoint: str) -> dict[str, float]:
    out = (run_dir / "audit").resolve()  # eval.py runs from the repo root
    if not (out / "metrics.json").exists():
        command = [
            sys.executable, "eval.py", f"ckpt_path={checkpoint}", "metrics=[memorization]",
            "num_samples=5000", f"hydra.run.dir={out}",
        ]  # fmt: skip
        subprocess.run(command, cwd=ROOT, check=True)
    return json.loads((out / "metrics.json").read_text())["metrics"]


def row(run_dir: Path) -> list[str]:
    result = json.loads((run_dir / "result.json").read_text())
    metrics = result["metrics"]
    checkpoint = torch.load(result["best_model_path"], map_location="cpu", weights_only=True)
    privacy = checkpoint.get(PRIVACY_KEY)
    model = checkpoint[CONFIG_KEY]["model"]["_target_"].rsplit(".", 1)[-1]
    memo = audit(run_dir, result["best_model_path"])

    def fmt(key: str, source: dict = metrics, digits: int = 2) -> str:
        value = source.get(key)
        return "-" if value is None else f"{value:.{digits}f}"

    epsilon = f"{privacy['epsilon']:.2f}" if privacy else "inf (no DP)"
    noise = f"{privacy['noise_multiplier']:.3f}" if privacy else "-"
    return [
        model,
        epsilon,
        noise,
        fmt("test/fid"),
        fmt("test/precision"),
        fmt("test/recall"),
        fmt("test/classes_covered", digits=0),
        fmt("test/class_kl", digits=3),
        fmt("test/nll_nats", digits=1),
        fmt("memorization/copying_ct", memo, 1),
        fmt("memorization/features_closer_than_heldout", memo)
        + " / "
        + fmt("memorization/pixels_closer_than_heldout", memo),
        f"{result['seconds'] / 60:.0f}",
        f"`{run_dir.name}`",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    header = [
        "model", "epsilon (delta 1e-5)", "noise", "FID", "precision", "recall", "classes",
        "class KL", "test NLL (nats)", "C_T", "closer than held-out (features / pixels)",
        "minutes", "run",
    ]  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for run_dir in args.runs:
        if (run_dir / "result.json").exists():
            print("| " + " | ".join(row(run_dir)) + " |", flush=True)


if __name__ == "__main__":
    main()

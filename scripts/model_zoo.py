"""Train every model recipe on MNIST with one budget and tabulate its test metrics.

    python scripts/model_zoo.py --epochs 5                      # all recipes, ~2.5 h on 2 CPU cores
    python scripts/model_zoo.py --epochs 20 --models hinge_gan  # one row, the full recipe
    python scripts/model_zoo.py --epochs 5 --table-only         # rebuild the table from runs
    python scripts/model_zoo.py --epochs 2 trainer.limit_test_batches=16 --models beta_vae
                                        # train.py overrides for every run go before --models

Each row is ``python train.py experiment=<model>_mnist trainer.max_epochs=<epochs>`` run in
``outputs/zoo/e<epochs>/<model>/``; its own ``trainer.test`` on the best checkpoint (by the
model's monitor) gives FID/KID/IS/precision/recall/class coverage on 10k samples against the
MNIST test split (project features), and for VAEs the IWAE test NLL (k=50, the training run's
setting; ``eval.py metrics=[nll]`` gives k=1000). Finished runs are skipped, so an
interrupted zoo resumes. Writes ``table.md`` and ``table.csv`` next to the runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Each runs experiment=<name>_mnist. The default model=gan is not a row: its own recipes are
# python train.py (5 epochs) and experiment=gan_mnist (docs/results.md, "Time to quality").
MODELS = ("dcgan", "dcgan_ema", "wgan_gp", "hinge_gan", "lsgan", "vae", "beta_vae", "vaegan")
COLUMNS = (
    ("fid", "FID"),
    ("kid", "KID"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("class_kl", "class KL"),
    ("classes_covered", "classes"),
    ("nll_nats", "test NLL (nats)"),
)


def run_model(model: str, epochs: int, run_dir: Path, extra: list[str]) -> None:
    """Train one recipe unless its run directory already holds a finished run."""
    done = run_dir / "zoo.json"
    if done.exists():
        print(f"[zoo] {model}: done already ({run_dir})", flush=True)
        return
    experiment = f"{model}_mnist"
    command = [
        sys.executable, "train.py", f"experiment={experiment}",
        f"trainer.max_epochs={epochs}", f"hydra.run.dir={run_dir}",
        "callbacks.progress_bar=null", *extra,
    ]  # fmt: skip
    print(f"[zoo] {model}: {' '.join(command[1:])}", flush=True)
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True)
    seconds = time.perf_counter() - start
    done.write_text(json.dumps({"command": " ".join(command[1:]), "seconds": seconds}))


def read_row(model: str, run_dir: Path) -> dict[str, object]:
    """The test metrics (last value of each test/* column) and wall time of one run."""
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    row: dict[str, object] = {"model": model}
    for key, _ in COLUMNS:
        values = [r[f"test/{key}"] for r in rows if r.get(f"test/{key}")]
        row[key] = float(values[-1]) if values else None
    val_fid = [float(r["val/fid"]) for r in rows if r.get("val/fid")]
    row["val_fid_by_epoch"] = val_fid
    meta = json.loads((run_dir / "zoo.json").read_text())
    row["minutes"] = meta["seconds"] / 60
    row["command"] = meta["command"].replace(f" hydra.run.dir={run_dir}", "")
    return row


def write_table(rows: list[dict[str, object]], out_dir: Path) -> str:
    def cell(value: object, key: str) -> str:
        if value is None:
            return "-"
        if key == "classes_covered":
            return f"{int(value)}"  # type: ignore[arg-type]
        if key in ("kid", "class_kl"):
            return f"{value:.3f}"
        return f"{value:.2f}"

    header = ["model", "epochs", *(title for _, title in COLUMNS), "wall time (min)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        epochs = str(row["command"]).split("trainer.max_epochs=")[1].split()[0]
        cells = [f"`{row['model']}`", epochs, *(cell(row[key], key) for key, _ in COLUMNS)]
        lines.append("| " + " | ".join([*cells, f"{row['minutes']:.0f}"]) + " |")
    table = "\n".join(lines)
    (out_dir / "table.md").write_text(table + "\n")
    with open(out_dir / "table.csv", "w", newline="") as f:
        fields = ["model", *(key for key, _ in COLUMNS), "minutes", "command", "val_fid_by_epoch"]
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--out", type=Path, default=None, help="default: outputs/zoo/e<epochs>")
    parser.add_argument("--table-only", action="store_true", help="tabulate finished runs only")
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides for every run")
    args = parser.parse_args()
    out_dir = (args.out or ROOT / "outputs" / "zoo" / f"e{args.epochs}").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    for model in args.models:
        if not args.table_only:
            run_model(model, args.epochs, out_dir / model, args.overrides)
    rows = [read_row(m, out_dir / m) for m in MODELS if (out_dir / m / "zoo.json").exists()]
    print(write_table(rows, out_dir))
    for row in rows:
        fids = ", ".join(f"{v:.1f}" for v in row["val_fid_by_epoch"])  # type: ignore[union-attr]
        print(f"{row['model']}: val/fid by epoch {fids}")


if __name__ == "__main__":
    main()

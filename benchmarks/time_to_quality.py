"""Quality per minute of compute: train recipes for a wall-clock budget, score them at marks.

    python benchmarks/time_to_quality.py --minutes 6                        # the default run
    python benchmarks/time_to_quality.py --minutes 60 --marks 5 10 20 40 60 \\
        --recipe default= --recipe hinge=experiment=hinge_gan_mnist
    python benchmarks/time_to_quality.py --minutes 30 --recipe vae=experiment=vae_mnist --nll-samples 1000

Each recipe (``name=override override ...``; empty: ``python train.py`` as it is) trains in a
fresh process as configured, stopped when ``--minutes`` of wall-clock time have passed on this
machine (``-- trainer.max_epochs=-1 model.scheduler=null``: train until the budget, whatever
the recipe's epochs; an epoch-length schedule needs an end), writing a checkpoint at each of
``--marks`` and, if its epochs end first, at the minute it ended (genlab.callbacks.time_marks:
training, validation and the FID monitor all count, as a user waits for them). Each checkpoint is then scored by ``eval.py``
on ``--num-samples`` samples against the 10k test images: FID, precision, recall, class KL
(and the IWAE NLL for models that declare it). Prints one row per (recipe, minute), writes
``results.csv``/``results.json`` and a plot of FID against minutes for all recipes
(``--plot``, e.g. docs/figures/time_to_quality.png). The machine and the budget are in the
output: minutes mean minutes of *this* machine, so compare rows measured alike. Extra
arguments after ``--`` are overrides for every recipe. No asserts: a benchmark reports.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

from genlab.callbacks.time_marks import mark_name

ROOT = Path(__file__).resolve().parents[1]

COLUMNS = ("recipe", "minute", "fid", "precision", "recall", "class_kl", "nll_nats")
# --conditional: the class-conditional metrics too (docs/evaluation.md), for conditional recipes.
CONDITIONAL_COLUMNS = ("cond_acc", "intra_fid", "class_precision", "class_recall")


def parse_recipe(text: str) -> tuple[str, list[str]]:
    name, _, overrides = text.partition("=")
    if not name:
        raise SystemExit(f"--recipe {text!r}: write name=overrides, e.g. hinge=experiment=x")
    return name, shlex.split(overrides)


def train(name: str, overrides: list[str], args: argparse.Namespace, out: Path) -> Path:
    run_dir = out / name
    marks = ",".join(f"{m:g}" for m in args.marks)
    command = [
        sys.executable, str(ROOT / "train.py"), *overrides, *args.overrides,
        "+callbacks.time_marks._target_=genlab.callbacks.time_marks.CheckpointAtMinutes",
        f"+callbacks.time_marks.dirpath={run_dir / 'checkpoints'}",
        f"+callbacks.time_marks.minutes=[{marks}]",
        "test=false", f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    print(f"[{name}] training for {args.minutes:g} min: {shlex.join(command[1:])}", flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    print(f"[{name}] trained in {(time.perf_counter() - start) / 60:.2f} min", flush=True)
    return run_dir


def written_marks(run_dir: Path) -> list[float]:
    """The minutes of the mark checkpoints a run wrote (its end too, if before the budget)."""
    names = (p.name for p in (run_dir / "checkpoints").glob("minute_*.ckpt"))
    return sorted(float(n.removeprefix("minute_").removesuffix(".ckpt")) for n in names)


def score(name: str, run_dir: Path, minute: float, args: argparse.Namespace) -> dict:
    checkpoint = run_dir / "checkpoints" / mark_name(minute)
    eval_dir = run_dir / "time_to_quality" / f"minute_{minute:g}"
    command = [
        sys.executable, str(ROOT / "eval.py"), f"ckpt_path={checkpoint}",
        f"metrics=[{','.join(metric_names(args))}]", f"num_samples={args.num_samples}",
        f"nll_samples={args.nll_samples}", f"hydra.run.dir={eval_dir}", "extras.print_config=false",
        *args.eval_overrides,
    ]  # fmt: skip
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    metrics = json.loads((eval_dir / "metrics.json").read_text())["metrics"]
    return {
        "recipe": name,
        "minute": minute,
        **{k: metrics.get(f"test/{k}") for k in columns(args)[2:]},
    }


def metric_names(args: argparse.Namespace) -> list[str]:
    conditional = ["cond_acc", "intra_fid", "class_pr"] if args.conditional else []
    return ["fid", "pr", "coverage", "model", *conditional]


def columns(args: argparse.Namespace) -> tuple[str, ...]:
    return COLUMNS + (CONDITIONAL_COLUMNS if args.conditional else ())


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in dict.fromkeys(r["recipe"] for r in rows):
        points = [(r["minute"], r["fid"]) for r in rows if r["recipe"] == name]
        ax.plot(*zip(*points, strict=True), marker="o", label=name)
    ax.set(xlabel="minutes of training (wall clock)", ylabel="test FID (lower is better)")
    ax.set_yscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")  # 12, not 1.2 x 10^1
    # Minor ticks labelled at 2, 3 and 5 x 10^k only: all eight would overlap near each decade.
    sparse = matplotlib.ticker.FuncFormatter(
        lambda v, _: f"{v:g}" if round(v / 10 ** math.floor(math.log10(v))) in (2, 3, 5) else ""
    )
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(sparse)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or 'cpu'}"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=6.0, help="the budget of each recipe")
    parser.add_argument("--marks", type=float, nargs="+", help="minutes to score at (default: "
                        "quarters of the budget)")  # fmt: skip
    parser.add_argument("--recipe", action="append", help="name=overrides (repeatable)")
    parser.add_argument("--num-samples", type=int, default=10000)
    parser.add_argument("--conditional", action="store_true", help="also score conditional "
                        "accuracy, intra-class FID and per-class precision/recall")  # fmt: skip
    parser.add_argument("--nll-samples", type=int, default=100, help="IWAE k for NLL models")
    parser.add_argument("--eval-override", dest="eval_overrides", action="append", default=[],
                        help="an override for eval.py, e.g. ++trainer.limit_test_batches=4")  # fmt: skip
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "time_to_quality")
    parser.add_argument("--plot", type=Path, help="where to save the FID-vs-minutes figure")
    parser.add_argument("--rows", type=Path, action="append", default=[],
                        help="results.json of an earlier run: its rows join the table and the "
                        "plot (curves measured apart, in one figure)")  # fmt: skip
    parser.add_argument("overrides", nargs="*", help="after --: overrides for every recipe")
    args = parser.parse_args(argv)
    args.marks = sorted(args.marks or [args.minutes * q for q in (0.25, 0.5, 0.75, 1.0)])
    if args.marks[-1] > args.minutes:
        raise SystemExit(
            f"--marks go up to {args.marks[-1]:g} min, past --minutes {args.minutes:g}"
        )
    args.marks[-1] = args.minutes  # training stops at the last mark: that is the budget
    # Only --rows: no training, the earlier results tabulated and plotted together.
    recipes = [parse_recipe(r) for r in args.recipe or ([] if args.rows else ["default="])]
    out = args.out / time.strftime("%Y-%m-%d_%H-%M-%S")

    rows = [row for path in args.rows for row in json.loads(path.read_text())["rows"]]
    for name, overrides in recipes:
        run_dir = train(name, overrides, args, out)
        rows += [score(name, run_dir, minute, args) for minute in written_marks(run_dir)]

    header = f"time to quality on {machine()}: {args.num_samples} samples vs the test set"
    shown = columns(args)
    print(f"\n{header}\n| " + " | ".join(shown) + " |\n|" + "---|" * len(shown))
    for row in rows:
        cells = [f"{v:.4g}" if isinstance(v, float) else "-" if v is None else str(v)
                 for v in (row.get(c) for c in shown)]  # fmt: skip
        print("| " + " | ".join(cells) + " |")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=shown, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    (out / "results.json").write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))
    plot(rows, args.plot or out / "fid_vs_minutes.png", header)
    print(f"results: {out}")
    return rows


if __name__ == "__main__":
    main()

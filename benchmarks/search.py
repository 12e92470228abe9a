"""What pruning buys a search: the same Optuna search with and without a pruner.

    python benchmarks/search.py                              # none vs successive halving, 16 trials each
    python benchmarks/search.py --pruner none --pruner successive_halving --trials 16
    python benchmarks/search.py --pruner median --threads 1 --out outputs/bench_search  # one arm

Each arm runs ``python train.py -m hparams_search=default_gan_optuna`` (the default GAN's
learning rate, betas, R1 weight and EMA decay; TPE seeded by ``seed``) in a fresh process, with
``hydra/sweeper/pruner=<name>``, on a shortened budget per trial (a twentieth of MNIST
per epoch, 8 epochs, val/fid on 1000 samples after each: the pruner's steps). It measures the process tree's CPU time
(user + system, every trial included) and wall clock, then reads the study back from
``study.json``. Prints one row per arm: trials completed / pruned, best val/fid and its trial,
CPU-minutes, and both as ratios to the first arm; writes ``results.json`` and a plot of the
best-so-far val/fid against CPU-minutes spent (``--plot``, e.g. docs/figures/search_pruning.png).
Arms run one after another unless started as separate commands (``--pruner X --out DIR`` twice
with ``--threads 1``, then ``--report DIR``). No asserts: a benchmark reports.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET = [
    "data.train_fraction=0.05",  # ~43 batches of 64 per epoch
    "trainer.max_epochs=8",  # 8 validations: the steps a pruner decides at
    "callbacks.fid.num_samples=1000",
    "test=false",  # the search's objective is val/fid; test each winner afterwards
    "extras.print_config=false",
    "callbacks.progress_bar=null",
    "data.num_workers=0",
]


def run_arm(pruner: str, trials: int, out: Path, threads: int | None, extra: list[str]) -> dict:
    sweep_dir = out / pruner
    command = [
        sys.executable, "train.py", "-m", "hparams_search=default_gan_optuna",
        f"hydra/sweeper/pruner={pruner}", f"hydra.sweeper.n_trials={trials}",
        f"hydra.sweep.dir={sweep_dir}", *BUDGET, *extra,
    ]  # fmt: skip
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    print("$", shlex.join(command[1:]), flush=True)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(sweep_dir / "search.log", "w") as log:
        code = subprocess.call(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # The arm's name: the pruner and any of its settings given after --.
    label = " ".join([pruner, *(o.split("pruner.", 1)[1] for o in extra if "sweeper.pruner." in o)])
    measured = {"pruner": label, "returncode": code, "cpu_minutes": cpu / 60,
                "wall_minutes": wall / 60, "threads": threads, "extra": extra}  # fmt: skip
    (sweep_dir / "measured.json").write_text(json.dumps(measured, indent=1))
    return measured


def read_arm(sweep_dir: Path) -> dict:
    """One arm's numbers from its sweep folder (measured.json + study.json)."""
    measured = json.loads((sweep_dir / "measured.json").read_text())
    study = json.loads((sweep_dir / "study.json").read_text())
    trials = [t for t in study["trials"] if not t.get("duplicate_of")]
    states = [t["state"] for t in trials]
    sign = 1 if study["directions"][0] == "minimize" else -1
    done = [t for t in trials if t["state"] == "COMPLETE"]
    best = min(done, key=lambda t: sign * t["values"][0]) if done else None
    # Best-so-far against the CPU spent: each trial's share is its wall time (result.json)
    # scaled to the arm's measured CPU time.
    seconds = []
    for t in trials:
        result = Path(t.get("run_dir") or "") / "result.json"
        seconds.append(json.loads(result.read_text()).get("seconds", 0) if result.is_file() else 0)
    scale = measured["cpu_minutes"] / max(sum(seconds), 1e-9)
    curve, spent, best_so_far = [], 0.0, None
    for t, s in zip(trials, seconds, strict=True):
        spent += s * scale
        if t["state"] == "COMPLETE":
            v = t["values"][0]
            best_so_far = v if best_so_far is None else min(best_so_far * sign, v * sign) * sign
        curve.append((spent, best_so_far, t["state"]))
    return {
        **measured,
        "completed": states.count("COMPLETE"),
        "pruned": states.count("PRUNED"),
        "failed": states.count("FAIL"),
        "best": best["values"][0] if best else None,
        "best_trial": best["number"] if best else None,
        "best_params": best["params"] if best else None,
        "best_run_dir": best.get("run_dir") if best else None,
        "curve": curve,
    }


def plot(arms: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for arm in arms:
        pts = [(c, b) for c, b, _ in arm["curve"] if b is not None]
        line = ax.step([c for c, _ in pts], [b for _, b in pts], where="post",
                       label=f"{arm['pruner']} (best {arm['best']:.3g})")  # fmt: skip
        color = line[0].get_color()
        for state, marker in (("COMPLETE", "o"), ("PRUNED", "x")):
            at = [(c, b) for c, b, s in arm["curve"] if s == state and b is not None]
            if at:  # where each trial ended, on the best-so-far curve
                ax.scatter(*zip(*at, strict=True), marker=marker, color=color, zorder=3,
                           label=f"{state.lower()} trials" if arm is arms[-1] else None)  # fmt: skip
    ax.set_xlabel("CPU-minutes spent")
    ax.set_ylabel("best val/fid so far")
    ax.grid(alpha=0.3)
    # Between the unpruned curve's first plateau and the pruned curves' steps.
    ax.legend(title="pruner", title_fontsize=7, fontsize=7, loc="lower left",
              bbox_to_anchor=(0.4, 0.42))  # fmt: skip
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(arms: list[dict], out: Path, plot_path: Path | None) -> None:
    base = arms[0]
    print(f"\nmachine: {platform.node() or 'this machine'}, {os.cpu_count()} CPU cores; "
          f"per trial: {' '.join(BUDGET[:3])}")  # fmt: skip
    # The target: how soon a search is within 5 % of the first arm's best (val/fid: lower).
    goal = base["best"] * 1.05
    print("| pruner | completed | pruned | best val/fid | best trial | CPU-min | wall-min "
          f"| best / {base['pruner']}'s | CPU / {base['pruner']}'s | CPU-min to within 5 % "
          f"of {base['best']:.3g} (/ {base['pruner']}'s total) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for arm in arms:
        ratio = arm["best"] / base["best"] if arm["best"] and base["best"] else float("nan")
        cpu = arm["cpu_minutes"] / base["cpu_minutes"]
        reached = next((c for c, b, _ in arm["curve"] if b is not None and b <= goal), None)
        arm["cpu_minutes_to_goal"] = reached
        to_goal = (f"{reached:.1f} ({reached / base['cpu_minutes']:.2f})" if reached is not None
                   else "not reached")  # fmt: skip
        print(f"| {arm['pruner']} | {arm['completed']} | {arm['pruned']} | {arm['best']:.4g} "
              f"| {arm['best_trial']} | {arm['cpu_minutes']:.1f} | {arm['wall_minutes']:.1f} "
              f"| {ratio:.3f} | {cpu:.2f} | {to_goal} |")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(arms, indent=1, default=str))
    if plot_path is not None:
        plot(arms, plot_path)
        print(f"plot: {plot_path}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pruner", action="append", help="none, median, successive_halving, "
                        "hyperband (repeatable; default: none and successive_halving)")  # fmt: skip
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch threads per arm")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_search")
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--report", type=Path, nargs="*", help="only report these arm folders")
    parser.add_argument("extra", nargs="*", help="overrides after --, for every trial")
    args = parser.parse_args()
    args.out = args.out.resolve()
    if args.report:
        arms = [read_arm(d.resolve()) for d in args.report]
        report(arms, args.out, args.plot)
        return
    for pruner in args.pruner or ["none", "successive_halving"]:
        run_arm(pruner, args.trials, args.out, args.threads, args.extra)
    arms = [read_arm(args.out / p) for p in args.pruner or ["none", "successive_halving"]]
    report(arms, args.out, args.plot)


if __name__ == "__main__":
    main()

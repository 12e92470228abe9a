"""An Optuna study in the sweep summary: its trials' states, the best-so-far curve with the
pruned trials, and for several objectives the Pareto front, each point named by its run folder.

Reads only ``study.json`` (``genlab.sweeps.study``), never the storage: a summary can be made
from a copied sweep folder, without Optuna.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

STUDY_FILE = "study.json"  # in the sweep folder: every trial of the study, for the summary
STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


def read_study_record(sweep_dir: str | Path) -> dict[str, Any] | None:
    """The sweep folder's ``study.json``, or None for a sweep that was no Optuna search."""
    path = Path(sweep_dir) / STUDY_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def real_trials(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The study's trials without the proposals that repeated a tried point (never run)."""
    return [t for t in record["trials"] if t.get("duplicate_of") is None]


def _signs(record: dict[str, Any]) -> list[float]:
    return [1.0 if d == "minimize" else -1.0 for d in record["directions"]]


def pareto_front(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The completed trials no other completed trial beats on every objective, ordered by
    the first objective."""
    signs = _signs(record)
    done = [t for t in real_trials(record) if t["state"] == "COMPLETE" and t.get("values")]
    keyed = [(t, [s * v for s, v in zip(signs, t["values"], strict=True)]) for t in done]

    def dominated(a: list[float]) -> bool:
        return any(
            all(x <= y for x, y in zip(b, a, strict=True)) and b != a for _, b in keyed
        )  # fmt: skip

    front = [t for t, k in keyed if not dominated(k)]
    return sorted(front, key=lambda t: signs[0] * t["values"][0])


def best_so_far(record: dict[str, Any]) -> list[tuple[int, float | None]]:
    """(trial number, best first-objective value among completed trials up to it)."""
    sign = _signs(record)[0]
    best: float | None = None
    curve = []
    for t in real_trials(record):
        if t["state"] == "COMPLETE" and t.get("values"):
            value = t["values"][0]
            best = value if best is None or sign * value < sign * best else best
        curve.append((t["number"], best))
    return curve


def _last_intermediate(trial: dict[str, Any]) -> float | None:
    values = trial.get("intermediate") or {}
    return values[max(values, key=int)] if values else None


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def study_markdown(record: dict[str, Any], label: Any) -> list[str]:
    """Lines for summary.md: the study's counts, and the Pareto table for several objectives.
    ``label(run_dir)``: how a run folder is named in the table (its job)."""
    trials = real_trials(record)
    counts = {s: sum(t["state"] == s for t in trials) for s in STATES}
    duplicates = len(record["trials"]) - len(trials)
    done = counts["COMPLETE"] + counts["PRUNED"]
    line = (
        f"Study {record['study_name']} ({record['storage']}): {done} of {record['n_trials']} "
        f"trials done ({counts['COMPLETE']} completed, {counts['PRUNED']} pruned), "
        f"{counts['FAIL']} failed"
    )
    if counts["RUNNING"]:
        line += f", {counts['RUNNING']} running"
    if duplicates:
        line += f"; {duplicates} proposals repeated a tried point and were not run"
    lines = ["", line + "."]
    objectives = record["objectives"]
    if len(objectives) > 1:
        front = pareto_front(record)
        params = list(dict.fromkeys(k for t in front for k in t["params"]))
        named = zip(objectives, record["directions"], strict=True)
        lines += [
            "",
            f"Pareto front ({', '.join(f'{o} ({d})' for o, d in named)}):",
            "",
            "| trial | " + " | ".join([*objectives, *params]) + " | run folder |",
            "|" + "---|" * (2 + len(objectives) + len(params)),
        ]
        for t in front:
            cells = [str(t["number"]), *(_fmt(v) for v in t["values"])]
            cells += [_fmt(t["params"].get(p, "")) for p in params]
            cells.append(label(t.get("run_dir")))
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def plot_history(record: dict[str, Any], out_dir: Path) -> Path | None:
    """The first objective per trial (completed: dots; pruned: crosses at their last reported
    validation) and the best-so-far curve."""
    trials = real_trials(record)
    if not trials:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objective = record["objectives"][0]
    done = [(t["number"], t["values"][0]) for t in trials
            if t["state"] == "COMPLETE" and t.get("values")]  # fmt: skip
    pruned = [(t["number"], _last_intermediate(t)) for t in trials if t["state"] == "PRUNED"]
    pruned = [(n, v) for n, v in pruned if v is not None]
    failed = [t["number"] for t in trials if t["state"] == "FAIL"]
    if not done and not pruned:
        return None  # nothing to draw: summary.md says why each trial failed
    fig, ax = plt.subplots(figsize=(6, 4))
    if done:
        ax.scatter(*zip(*done, strict=True), label="completed", zorder=3)
    if pruned:
        ax.scatter(*zip(*pruned, strict=True), marker="x", color="tab:red",
                   label="pruned (last validation)", zorder=3)  # fmt: skip
    curve = [(n, b) for n, b in best_so_far(record) if b is not None]
    if curve:
        ax.step(*zip(*curve, strict=True), where="post", color="black", label="best so far")
    for number in failed:
        ax.axvline(number, color="grey", alpha=0.3, lw=1)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial" + (" (grey lines: failed)" if failed else ""))
    ax.set_ylabel(objective)
    values = [v for _, v in done + pruned]
    if values and min(values) > 0 and max(values) / min(values) > 20:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"study {record['study_name']}", fontsize=9)
    fig.tight_layout()
    path = out_dir / "plot_study_history.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_pareto(record: dict[str, Any], out_dir: Path, label: Any) -> Path | None:
    """First two objectives of every completed trial; the front joined and named by job."""
    if len(record["objectives"]) < 2:
        return None
    done = [t for t in real_trials(record) if t["state"] == "COMPLETE" and t.get("values")]
    if not done:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    front = pareto_front(record)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([t["values"][0] for t in done], [t["values"][1] for t in done], color="tab:grey",
               alpha=0.6, label="completed trials")  # fmt: skip
    ax.plot([t["values"][0] for t in front], [t["values"][1] for t in front], "o-",
            color="tab:red", label="Pareto front")  # fmt: skip
    for t in front:
        ax.annotate(f"#{t['number']} {label(t.get('run_dir'))}", (t["values"][0], t["values"][1]),
                    fontsize=7, xytext=(4, 4), textcoords="offset points")  # fmt: skip
    x, y = record["objectives"][:2]
    dx, dy = record["directions"][:2]
    ax.set_xlabel(f"{x} ({dx})")
    ax.set_ylabel(f"{y} ({dy})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / "plot_pareto_front.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

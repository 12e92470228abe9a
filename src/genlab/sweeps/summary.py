"""Read a finished (or interrupted) multirun back as one table and a few plots.

    python -m genlab.sweeps summarize outputs/train/multiruns/<time>
    python -m genlab.sweeps summarize DIR --metric test/fid --x data.train_fraction

Every job of a multirun leaves ``<job>/.hydra/overrides.yaml`` (what it changed) and
``<job>/result.json`` (written by ``genlab.train.run``: status, best monitor value, best
checkpoint, final metrics). ``summarize`` joins them into ``summary.csv`` / ``summary.md`` in the
sweep directory and draws, for each swept parameter, the metric against it (one line per
combination of the other swept parameters) as ``plot_<metric>_vs_<param>.png``. Hydra calls it
by itself at the end of every ``-m`` run (``SummarizeSweep`` in ``conf/hydra/default.yaml``),
also one that stopped on a failed job. Before any job, ``CheckSweep`` refuses sweeper counts
that cannot run (``hydra.sweeper.n_trials=0``) with one line.
"""

from __future__ import annotations

import atexit
import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback

from genlab.metrics.names import score_keys
from genlab.sweeps.study_report import (
    plot_history,
    plot_pareto,
    read_study_record,
    real_trials,
    study_markdown,
)
from genlab.utils.atomic import atomic_path

log = logging.getLogger(__name__)
RESULT_FILE = "result.json"
# The test metrics a summary table shows, when the jobs logged them (GAN and VAE alike): the
# ranking scores of these sample metrics (their keys declared in metrics/names.py), then the
# VAE's likelihood and reconstruction, which its test_step logs (models declare no test keys).
TABLE_SAMPLE_METRICS = ("fid", "kid", "pr", "coverage")
TABLE_METRICS = (*score_keys(TABLE_SAMPLE_METRICS, details=False), "nll_nats", "elbo", "ssim")


def write_result(run_dir: str | Path, result: dict[str, Any]) -> None:
    """Write ``result.json`` atomically: a killed job never leaves half a file behind."""
    with atomic_path(Path(run_dir) / RESULT_FILE) as tmp:
        tmp.write_text(json.dumps(result, indent=2, default=str))


@dataclass
class Job:
    num: str
    dir: Path
    overrides: dict[str, str]
    result: dict[str, Any] = field(default_factory=dict)
    trial: dict[str, Any] | None = None  # its Optuna trial (study.json), in a search

    @property
    def status(self) -> str:
        return self.result.get("status", "no result (killed or still running)")

    def value(self, metric: str) -> float | None:
        """The job's number for ``metric``: ``best`` (its monitor's best value) or a logged
        key such as ``test/fid``."""
        if metric == "best":
            return self.result.get("best_score")
        return self.result.get("metrics", {}).get(metric)


def collect(sweep_dir: str | Path) -> list[Job]:
    """Every job directory under a multirun directory, in job order."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir} is not a directory: pass a multirun directory, "
                                "e.g. outputs/train/multiruns/<time>.")  # fmt: skip
    jobs = [read_job(f.parent.parent) for f in sweep_dir.glob("*/.hydra/overrides.yaml")]
    if not jobs:
        raise FileNotFoundError(
            f"no jobs in {sweep_dir}: expected <job>/.hydra/overrides.yaml from `train.py -m`."
        )
    return sorted(jobs, key=lambda j: (len(j.num), j.num))


def read_job(job_dir: Path, num: str | None = None) -> Job:
    """One job folder: what its command changed and what it recorded."""
    overrides = {}
    for item in yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text()) or []:
        key, _, value = str(item).partition("=")
        overrides[key.lstrip("+~")] = value
    result_file = job_dir / RESULT_FILE
    try:
        result = json.loads(result_file.read_text()) if result_file.exists() else {}
    except ValueError:  # never half-written (atomic), but a copied folder may be damaged
        result = {}
    return Job(num or job_dir.name, job_dir, overrides, result)


def with_study(sweep_dir: Path, jobs: list[Job]) -> tuple[list[Job], dict[str, Any] | None]:
    """An Optuna search's jobs joined to their trials, with the trials of earlier runs of the
    same study (other sweep folders, named ``<sweep>/<job>``), in trial order."""
    record = read_study_record(sweep_dir)
    if record is None:
        return jobs, None
    by_dir = {j.dir.resolve(): j for j in jobs}
    for trial in real_trials(record):
        run_dir = trial.get("run_dir")
        if not run_dir:
            continue
        path = Path(run_dir).resolve()
        if path not in by_dir and (path / ".hydra" / "overrides.yaml").is_file():
            by_dir[path] = read_job(path, f"{path.parent.name}/{path.name}")
        if path in by_dir:
            by_dir[path].trial = trial
    order = lambda j: (j.trial is None, j.trial["number"] if j.trial else 0, len(j.num), j.num)  # noqa: E731
    return sorted(by_dir.values(), key=order), record


def swept_keys(jobs: list[Job]) -> list[str]:
    """Override keys whose value differs between jobs (the sweep's parameters)."""
    keys = dict.fromkeys(k for job in jobs for k in job.overrides)
    return [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1]


def _number(text: str | None) -> float | None:
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _finished(jobs: list[Job]) -> list[Job]:
    return [j for j in jobs if j.status == "ok" and j.value("best") is not None]


def monitors(jobs: list[Job]) -> list[str]:
    """The distinct ``monitor (mode)`` of the finished jobs: one unless the sweep mixed models
    (``model=gan,vae``), whose best values cannot be compared."""
    names = (f"{j.result.get('monitor')} ({j.result.get('monitor_mode')})" for j in _finished(jobs))
    return list(dict.fromkeys(names))


def best_job(jobs: list[Job]) -> Job | None:
    """The finished job with the best monitor value, by the monitor's own mode; None when
    none finished or the jobs monitor different metrics (a val/fid is no val/elbo)."""
    done = _finished(jobs)
    if not done or len(monitors(done)) > 1:
        return None
    sign = -1.0 if done[0].result.get("monitor_mode") == "max" else 1.0
    return min(done, key=lambda j: sign * float(j.value("best")))  # type: ignore[arg-type]


def default_metric(jobs: list[Job]) -> str:
    """The model's monitor (what the sweep optimised) when jobs report it."""
    for job in jobs:
        if job.result.get("monitor"):
            return job.result["monitor"]
    return "best"


def summarize(
    sweep_dir: str | Path, metrics: list[str] | None = None, x: str | None = None
) -> dict[str, Any]:
    """Write summary.csv, summary.md and plots into ``sweep_dir``; return what was written.

    ``metrics``: the keys to plot (default: the model's monitor); ``x``: plot them against this
    override only (default: each swept parameter in turn)."""
    sweep_dir = Path(sweep_dir)
    jobs, study = with_study(sweep_dir, collect(sweep_dir))
    params = swept_keys(jobs)
    metrics = list(metrics or [default_metric(jobs)])
    logged = {k for j in jobs for k in j.result.get("metrics", {})}
    wanted = [*metrics, *(f"test/{k}" for k in TABLE_METRICS)]
    shown = [m for m in dict.fromkeys(wanted) if m in logged]
    # SLURM jobs say how often they were requeued (result.json): a column, for them only.
    on_slurm = any("requeues" in j.result for j in jobs)
    rows = []
    for job in jobs:
        row: dict[str, Any] = {"job": job.num}
        if study is not None:  # an Optuna search: the trial and the state Optuna recorded
            row["trial"] = job.trial["number"] if job.trial else ""
            row["state"] = job.trial["state"] if job.trial else ""
        row.update({p: job.overrides.get(p, "") for p in params})
        row["status"] = job.status
        if on_slurm:
            row["requeues"] = job.result.get("requeues", "")
        row["best"] = job.value("best")
        row.update({m: job.value(m) for m in shown})
        row["best_checkpoint"] = job.result.get("best_model_path", "")
        rows.append(row)
    columns = list(rows[0])
    with open(sweep_dir / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)

    def fmt(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in columns) + " |" for r in rows]
    best = best_job(jobs)
    watched = monitors(jobs)
    no_best = None
    if best is None and len(watched) > 1:
        no_best = (f"No best job: the jobs monitor different metrics ({', '.join(watched)}; "
                   "compare their columns instead).")  # fmt: skip
    if best is not None:
        lines += [
            "",
            f"Best: job {best.num} ({best.result.get('monitor')} = {fmt(best.value('best'))}): "
            f"{' '.join(f'{k}={best.overrides[k]}' for k in params if k in best.overrides)}",
            f"All its overrides: {best.dir / '.hydra' / 'overrides.yaml'}",
            f"Checkpoint: {best.result.get('best_model_path') or '-'}",
        ]
    elif no_best:
        lines += ["", no_best]
    label = _job_label(jobs)
    if study is not None:
        lines += study_markdown(study, label)
    pruned = [j for j in jobs if j.status == "pruned"]
    if pruned:
        lines += ["", "Pruned (stopped early by the search's pruner; folders kept):"]
        lines += [f"- job {j.num}: after validation {j.result.get('pruned_after_validation')}, "
                  f"{j.result.get('monitor')} = {fmt(j.value('best'))}" for j in pruned]  # fmt: skip
    failed = [j for j in jobs if j.status not in ("ok", "pruned")]
    if failed:
        lines += ["", "Not finished:"]
        lines += [f"- job {j.num}: {_why(j)}" for j in failed]
    markdown = "\n".join(lines) + "\n"
    (sweep_dir / "summary.md").write_text(markdown)
    finished = [j for j in jobs if j.status == "ok"]  # a pruned run's values are partial
    plots = [
        _plot(finished, metric, param, [p for p in params if p != param], sweep_dir)
        for metric in metrics
        for param in ([x] if x else params)
    ]
    if study is not None:
        plots += [plot_history(study, sweep_dir), plot_pareto(study, sweep_dir, label)]
    return {
        "jobs": jobs,
        "params": params,
        "best": best,
        "no_best": no_best,  # why no job is named best, when jobs monitor different metrics
        "markdown": markdown,
        "plots": [p for p in plots if p is not None],
        "study": study,  # the Optuna study (study.json), for a search
    }


def _job_label(jobs: list[Job]) -> Any:
    """How the study's tables name a run folder: its job, else the folder itself."""
    names = {j.dir.resolve(): f"job {j.num}" for j in jobs}
    return lambda run_dir: names.get(Path(run_dir).resolve(), str(run_dir)) if run_dir else "-"


def _why(job: Job) -> str:
    if job.result.get("error"):
        return job.result["error"]
    outcome = (job.trial or {}).get("outcome")
    return f"{job.status}; {outcome}" if outcome and outcome != job.status else job.status


def _plot(
    jobs: list[Job], metric: str, param: str, others: list[str], out_dir: Path
) -> Path | None:
    """``metric`` against ``param``; one line per combination of the other swept values."""
    import matplotlib

    matplotlib.use("Agg")  # headless: sweeps run on servers
    import matplotlib.pyplot as plt

    points = [(j, j.value(metric)) for j in jobs if j.value(metric) is not None]
    if not points:
        log.warning("no job reports %s: no plot against %s", metric, param)
        return None
    xs = [j.overrides.get(param, "") for j, _ in points]
    numeric = all(_number(v) is not None for v in xs)
    categories = sorted(set(xs), key=lambda v: (_number(v) is None, _number(v) or 0, v))
    groups: dict[str, list[tuple[float, float]]] = {}
    for (job, value), xv in zip(points, xs, strict=True):
        label = ", ".join(f"{k}={job.overrides.get(k, '')}" for k in others) or metric
        position = float(xv) if numeric else float(categories.index(xv))
        groups.setdefault(label, []).append((position, float(value)))
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, pts in sorted(groups.items()):
        pts.sort()
        ax.plot([p for p, _ in pts], [v for _, v in pts], marker="o", label=label)
    positives = [float(v) for v in xs if numeric and float(v) > 0]
    if numeric and len(positives) == len(xs) and max(positives) / min(positives) >= 20:
        ax.set_xscale("log")  # learning rates, data fractions: spread over decades
    if not numeric:
        ax.set_xticks(range(len(categories)), categories, rotation=20)
    ax.set_xlabel(param)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    if len(groups) > 1:
        ax.legend(fontsize=7)
    fig.tight_layout()
    safe = lambda s: s.replace("/", "_").replace(".", "_")  # noqa: E731
    path = out_dir / f"plot_{safe(metric)}_vs_{safe(param)}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


class SummarizeSweep(Callback):
    """Hydra callback: summarise a multirun when it ends and print the best job.

    ``metrics`` / ``x`` as in :func:`summarize` (``hydra.callbacks.sweep_summary.metrics``).

    Hydra calls ``on_multirun_end`` only when the sweeper returns. The basic sweeper instead
    re-raises the first failed job's error once its jobs have run (and Ctrl-C or an Optuna
    ``max_failure_rate`` below 1 also end a sweep by an exception), so the summary is then
    written when the process exits, failed jobs and their errors included."""

    def __init__(self, metrics: list[str] | None = None, x: str | None = None) -> None:
        self.metrics, self.x = metrics, x
        self._sweep_dir: Path | None = None

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        self._sweep_dir = Path(config.hydra.sweep.dir)
        atexit.register(self._summarize_at_exit)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        atexit.unregister(self._summarize_at_exit)
        self._report(Path(config.hydra.sweep.dir))

    def _summarize_at_exit(self) -> None:
        """The sweep ended by an exception (a failed job, Ctrl-C): summarise what ran."""
        if self._sweep_dir is None or not any(self._sweep_dir.glob("*/.hydra/overrides.yaml")):
            return  # stopped before any job (e.g. a config that does not compose)
        try:
            self._report(self._sweep_dir)
        except Exception as err:  # at exit a traceback would only bury the sweep's own error
            log.warning("sweep summary skipped: %s: %s", type(err).__name__, err)

    def _report(self, sweep_dir: Path) -> None:
        try:
            summary = summarize(sweep_dir, self.metrics, self.x)
        except (FileNotFoundError, OSError, ValueError) as err:  # never fail a finished sweep
            log.warning("sweep summary skipped: %s", err)
            return
        best = summary["best"]
        log.info("sweep summary: %s", sweep_dir / "summary.md")
        if best is not None:
            swept = [k for k in summary["params"] if k in best.overrides]
            overrides = " ".join(f"{k}={best.overrides[k]}" for k in swept) or "one job"
            log.info(
                "best job %s: %s = %.4g | %s | checkpoint: %s",
                best.num, best.result.get("monitor"), best.value("best"), overrides,
                best.result.get("best_model_path") or "-",
            )  # fmt: skip
        elif summary["no_best"]:
            log.info(summary["no_best"])
        failed = [j for j in summary["jobs"] if j.status != "ok"]
        if failed:
            log.warning(
                "%d of %d jobs did not finish (listed in summary.md): %s",
                len(failed), len(summary["jobs"]), ", ".join(f"job {j.num}" for j in failed),
            )  # fmt: skip

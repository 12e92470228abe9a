"""SLURM batch jobs that are stopped and requeued continue exactly, in their own run folder.

    sbatch scripts/slurm/train.sbatch model=vae        # or: python train.py -m hydra/launcher=slurm
    scontrol requeue <id>                              # pre-emption (PreemptMode=REQUEUE) does this
    scancel --signal=TERM <id>                         # a stop that this job requeues itself
    (the time limit: the warning signal, USR1 or USR2, some seconds before it)

How, in one place:

- *Which folder.* A batch job's run folder is keyed by its job id
  (``runs/<time>_job<id>``); a requeued job (``SLURM_RESTART_COUNT`` > 0) finds that folder
  again (``resolvers.run_dir``). Under the submitit launcher the job's folder is the sweep's
  ``<sweep>/<num>``, the same on every start.
- *Continue.* A requeued job whose folder holds ``checkpoints/last.ckpt`` resumes from it
  (``train.run``), as ``resume=<folder>`` would; with no checkpoint yet it starts over there.
- *Stop.* SIGTERM, and the warning signals USR1/USR2 during ``fit``, stop the run after the batch
  in flight with ``last.ckpt`` written (``resume.interrupt``). Lightning's own SLURM requeue
  (``auto_requeue``, which would write ``hpc_ckpt_*.ckpt`` on USR1) is turned off, and
  submitit's USR2 handler is replaced during ``fit``: one mechanism acts on each signal.
- *Requeue.* After ``result.json`` is written, a job that SLURM is not already requeueing or
  cancelling (its state is still RUNNING: a time-limit warning, ``scancel --signal=TERM``) is
  requeued with ``scontrol requeue``, up to ``requeue_limit`` times; then it stops as
  ``interrupted`` with the resume command in ``result.json``.

An interactive allocation (``salloc``, ``srun --pty``) is not a batch job: runs there get the
usual time-stamped folders and are never requeued.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

log = logging.getLogger(__name__)

# The signals a job may ask for before its time limit (sbatch --signal=[B:]USR2@90). submitit
# uses USR2; Lightning's SLURM convention is USR1.
WARNING_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)
# Requeues a job asks for itself after a stop (``requeue_limit`` in conf/train.yaml). A run
# that cannot finish in that many starts has a config problem, not bad luck.
DEFAULT_REQUEUE_LIMIT = 10


@dataclass(frozen=True)
class BatchJob:
    job_id: str  # "<array id>_<task id>" for an array task
    restarts: int  # SLURM_RESTART_COUNT: how many times this job was requeued

    @property
    def folder_suffix(self) -> str:
        return f"job{self.job_id}"


@cache
def batch_job() -> BatchJob | None:
    """This process's SLURM batch job, or None outside one (no SLURM, or an interactive
    allocation: ``salloc``, ``srun --pty``, whose requeue and folder rules would surprise)."""
    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id or not re.fullmatch(r"[0-9]+", job_id):
        return None
    if os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive", "sh", "zsh"):
        return None  # Lightning's rule for interactive sessions, kept for agreement with it
    if _job_field(job_id, "BatchFlag") != "1":
        return None
    array_id, task_id = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_id and task_id:
        job_id = f"{array_id}_{task_id}"
    try:
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    except ValueError:
        restarts = 0
    return BatchJob(job_id=job_id, restarts=restarts)


# Job states after which SLURM runs nothing more of a job (a requeued one is PENDING again).
FINISHED_STATES = frozenset(
    {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL"}
)


def job_fields(job_id: str) -> dict[str, str] | None:
    """``scontrol -o show job <id>`` as a dict (JobState, Reason, Restarts, BatchFlag, ...);
    None when SLURM cannot be asked. Jobs stay listed a while after they end."""
    if shutil.which("scontrol") is None:
        return None
    try:
        out = subprocess.run(
            ["scontrol", "-o", "show", "job", job_id],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return dict(field.split("=", 1) for field in out.split() if "=" in field)


def _job_field(job_id: str, name: str) -> str | None:
    """One field of ``scontrol show job``; None when SLURM cannot be asked."""
    return (job_fields(job_id) or {}).get(name)


def requeued_run_dir(runs_dir: str | Path) -> Path | None:
    """The folder under ``runs_dir`` that an earlier start of this requeued batch job made with
    this same command (a batch script may run several trainings: each finds its own)."""
    job = batch_job()
    if job is None or job.restarts == 0:
        return None
    command = [Path(sys.argv[0]).name, *sys.argv[1:]]  # as run_dir.run_info records it
    for folder in sorted(Path(runs_dir).glob(f"*_{job.folder_suffix}"), reverse=True):
        try:
            recorded = json.loads((folder / "run_info.json").read_text()).get("command")
        except (OSError, ValueError, AttributeError):
            continue
        if recorded == command:
            return folder
    return None


def run_folder_suffix() -> str | None:
    """``job<id>`` in a batch job: its run folder is found again after a requeue."""
    job = batch_job()
    return job.folder_suffix if job is not None else None


def requeued_checkpoint(run_dir: str | Path) -> Path | None:
    """``<run_dir>/checkpoints/last.ckpt`` when this process is a requeued batch job that wrote
    it on an earlier start; None otherwise (a first start, or no checkpoint yet: start over)."""
    job = batch_job()
    if job is None or job.restarts == 0:
        return None
    last = Path(run_dir) / "checkpoints" / "last.ckpt"
    if last.is_file():
        log.info("SLURM job %s, start %d: continuing from %s", job.job_id, job.restarts + 1, last)
        return last
    log.info("SLURM job %s was requeued before its first checkpoint: starting over", job.job_id)
    return None


# train.py notes a warning signal that comes while it is still importing (before any handler of
# this module could be installed) in this variable: SIGUSR1/2's default action would kill it.
WARNED_ENV = "GENLAB_SLURM_WARNED"


def pending_warning() -> int | None:
    """A warning signal that came before training started (then forgotten: it is acted on)."""
    name = os.environ.pop(WARNED_ENV, None)
    return getattr(signal, name, None) if name in ("SIGUSR1", "SIGUSR2") else None


@contextmanager
def warning_signals_logged() -> Iterator[None]:
    """In a batch job, for the whole run: a warning signal outside ``fit`` (set-up, the final
    test, shutdown) is logged instead of killing the process with USR1/USR2's default action,
    or letting submitit requeue a job whose training is done. During ``fit`` the interrupt
    callback's handler stops and requeues instead."""
    if batch_job() is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def log_it(signum: int, frame: object) -> None:
        os.environ[WARNED_ENV] = signal.Signals(signum).name  # training, if next, stops at once
        log.warning(
            "%s: the SLURM job's time limit is near, outside training: carrying on (training "
            "stops after its first batch; in the final test, last.ckpt and the best checkpoint "
            "are written already, and resume=<run folder> tests them if the limit cuts it).",
            signal.Signals(signum).name,
        )

    previous = {signum: signal.signal(signum, log_it) for signum in WARNING_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def threads_for_allocation() -> None:
    """Torch's threads = the CPUs SLURM gave this task (``--cpus-per-task``), not every core
    of the node: jobs sharing a node would otherwise oversubscribe it. (Lightning divides them
    among DDP ranks itself.)"""
    import torch

    try:
        cpus = int(os.environ.get("SLURM_CPUS_PER_TASK", ""))
    except ValueError:
        return
    if batch_job() is not None and 0 < cpus < torch.get_num_threads():
        torch.set_num_threads(cpus)


def silence_srun_hint() -> None:
    """Lightning warns, wherever ``srun`` is installed, that it "is available but not used"
    (when a trainer is built, and at each fit and test). genlab's launchers start their tasks
    themselves, and a one-task batch job needs no srun: the hint is noise there. Call it inside
    the entry point's ``warnings.catch_warnings()``, so the filter holds for that run only."""
    warnings.filterwarnings("ignore", message=r"The `srun` command is available")


def cluster_plugins() -> list:
    """Trainer plugins for this environment: under SLURM, Lightning's environment with its own
    auto-requeue off (this module requeues; two handlers must not act on one signal)."""
    from pytorch_lightning.plugins.environments import SLURMEnvironment

    if not SLURMEnvironment.detect():
        return []
    return [SLURMEnvironment(auto_requeue=False)]


# Job states in which SLURM itself is requeueing the job (scontrol requeue, pre-emption with
# PreemptMode=REQUEUE): it is signalled, completes, and starts again.
SLURM_REQUEUEING = ("COMPLETING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "PREEMPTED", "PENDING")


def requeue_after_stop(limit: int | None) -> tuple[str, str] | None:
    """After a graceful stop of a batch job: requeue it, unless SLURM is already requeueing it
    or ending it (``scancel``, its time limit), or it has been requeued ``limit`` times.

    Returns ``(status, what happened)`` for ``result.json``: status ``requeued`` when the job
    will start again, else ``interrupted``; None outside a batch job."""
    job = batch_job()
    if job is None:
        return None
    limit = DEFAULT_REQUEUE_LIMIT if limit is None else limit
    state = _job_field(job.job_id, "JobState")
    if state in SLURM_REQUEUEING:
        return "requeued", f"requeued by SLURM (job state {state})"
    if state != "RUNNING":  # scancel, a time limit with no warning signal asked for
        return "interrupted", f"stopped by SLURM (job state {state})"
    if job.restarts >= limit:
        log.warning(
            "SLURM job %s was requeued %d times (requeue_limit=%d): not again. Resume it with "
            "python train.py resume=<its run folder>, or raise requeue_limit.",
            job.job_id,
            job.restarts,
            limit,
        )
        return "interrupted", f"not requeued: requeue_limit={limit} reached"
    try:
        subprocess.run(
            ["scontrol", "requeue", job.job_id], capture_output=True, text=True, timeout=60,
            check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as err:
        detail = str(getattr(err, "stderr", "") or err).strip()
        log.warning("could not requeue SLURM job %s: %s", job.job_id, detail)
        return "interrupted", f"requeue failed: {detail}"
    log.warning("requeued SLURM job %s: it continues from last.ckpt", job.job_id)
    return "requeued", "requeued itself"

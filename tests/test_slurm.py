"""The cluster path against a real one-node SLURM (scripts/slurm_local.sh up; .ci/run starts it).

Every test here is marked ``slurm``: it skips with one line where no SLURM answers, and fails
instead where ``GENLAB_REQUIRE_SLURM=1`` (CI). The requeue cases are submitted side by side and
waited for together; SLURM holds a requeued job for about 2 minutes before it may start again,
and ``wait_for_jobs`` releases that hold (``scontrol update StartTime=now``) to keep CI short.
"""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest
import torch

from tests.conftest import (
    JOB_TINY,
    ROOT,
    release_requeued_jobs,
    run_script,
    sbatch,
    wait_for_jobs,
)

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

# A tiny GAN, three short epochs, a loss row per batch: long enough to be stopped in epoch 2 and
# in a validation, short enough for CI. Threads are SLURM's: --cpus-per-task=1.
RUN = [
    *JOB_TINY,
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=6",
    "trainer.limit_val_batches=2",
    "++trainer.deterministic=true",
    "test=false",
]
SBATCH = ROOT / "scripts" / "slurm" / "train.sbatch"
JOB = ["--cpus-per-task=1", "--mem=2G", "--time=10"]


def _options(log_dir: Path, *options: str) -> list[str]:
    """sbatch options, the job's log beside its run folder (not in the repo)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    return [*(options or JOB), f"--output={log_dir}/slurm-%j.out"]


def _run_dir(log_dir: Path) -> Path:
    runs = sorted((log_dir / "train" / "runs").iterdir())
    assert len(runs) == 1, f"one run folder expected, found {[r.name for r in runs]}"
    return runs[0]


def _result(run_dir: Path) -> dict:
    return json.loads((run_dir / "result.json").read_text())


def _rows(run_dir: Path) -> list[dict[str, str]]:
    """metrics.csv's rows, but for wall-clock columns (val/fid_seconds)."""
    with open(run_dir / "metrics.csv") as f:
        return [
            {k: v for k, v in r.items() if not k.endswith("_seconds")} for r in csv.DictReader(f)
        ]


def _assert_same_run(run_dir: Path, reference: Path) -> None:
    """Same metrics rows, same best checkpoint and score, same final weights."""
    assert _rows(run_dir) == _rows(reference)
    mine, theirs = _result(run_dir), _result(reference)
    assert mine["best_score"] == theirs["best_score"]
    assert Path(mine["best_model_path"]).name == Path(theirs["best_model_path"]).name
    for name in ("last.ckpt", Path(theirs["best_model_path"]).name):
        a = torch.load(run_dir / "checkpoints" / name, weights_only=True)["state_dict"]
        b = torch.load(reference / "checkpoints" / name, weights_only=True)["state_dict"]
        assert all(torch.equal(a[k], b[k]) for k in b), f"{name}: weights differ"


def test_requeues_continue_exactly_in_the_same_run_folder(tmp_path: Path) -> None:
    """Five batch jobs of scripts/slurm/train.sbatch, side by side: one never stopped; one
    requeued by ``scontrol requeue`` in its second epoch and again during a validation; one cut
    by its time limit (it checkpoints at the warning signal and requeues itself); one stopped by
    ``scancel --full --signal=TERM`` (it requeues itself); one requeued before it had a checkpoint
    (it starts over in its folder). Each ends as the first one did."""
    reference = tmp_path / "reference"
    requeued = tmp_path / "requeued"
    timed = tmp_path / "timed"
    term = tmp_path / "term"
    early = tmp_path / "early"
    jobs = {
        "reference": sbatch(
            SBATCH, *RUN, f"paths.log_dir={reference}", options=_options(reference)
        ),
        "requeued": sbatch(
            SBATCH,
            *RUN,
            f"paths.log_dir={requeued}",
            "+callbacks.requeue_train._target_=tests.fault_injection.RequeueAt",
            "+callbacks.requeue_train.epoch=1",
            "+callbacks.requeue_train.batch=2",
            "+callbacks.requeue_val._target_=tests.fault_injection.RequeueAt",
            "+callbacks.requeue_val.epoch=1",
            "+callbacks.requeue_val.batch=0",
            "+callbacks.requeue_val.in_validation=true",
            options=_options(requeued),
        ),
        # A 1-minute limit with the warning 40 s before it. SLURM checks limits every 30 s and
        # may send the warning up to that much early, during start-up too, so the warning comes
        # within the first 50 s; 3 s per batch (18 batches) makes the first start outlast it.
        # The requeued start gets a 10-minute limit (_on_restart): in a 1-minute job an early
        # warning can leave a start no time to work, and it would requeue without end.
        "timed": sbatch(
            SBATCH,
            *RUN,
            f"paths.log_dir={timed}",
            "+callbacks.slow._target_=tests.fault_injection.SlowBatches",
            "+callbacks.slow.seconds=3",
            "+callbacks.slow.first_start_only=true",
            options=_options(
                timed, "--cpus-per-task=1", "--mem=2G", "--time=1", "--signal=B:USR2@40"
            ),
        ),
        "term": sbatch(
            SBATCH,
            *RUN,
            f"paths.log_dir={term}",
            "+callbacks.slow._target_=tests.fault_injection.SlowBatches",
            "+callbacks.slow.seconds=1",
            options=_options(term),
        ),
        "early": sbatch(
            SBATCH,
            *RUN,
            f"paths.log_dir={early}",
            "+callbacks.requeue._target_=tests.fault_injection.RequeueAt",
            "+callbacks.requeue.epoch=0",
            "+callbacks.requeue.batch=1",
            "+callbacks.requeue.on_start=0",
            options=_options(early),
        ),
    }
    # scancel --signal=TERM once the job has written its first epoch's checkpoint.
    wait_for_jobs(
        [jobs["term"]],
        until=lambda: any((term / "train" / "runs").glob("*/checkpoints/last.ckpt")),
        timeout=600,
    )
    # --full: the batch shell too, which is python itself (the script execs it).
    subprocess.run(["scancel", "--full", "--signal=TERM", jobs["term"]], check=True)

    def _on_restart(job: str) -> None:
        if job == jobs["early"]:
            _drop_checkpoints(early)
        elif job == jobs["timed"]:
            subprocess.run(["scontrol", "update", f"JobId={job}", "TimeLimit=10"], check=True)

    states = wait_for_jobs(list(jobs.values()), timeout=1200, on_restart=_on_restart)
    assert all(s == "COMPLETED" for s in states.values()), states

    ref = _run_dir(reference)
    assert _result(ref)["requeues"] == 0
    for name, log_dir, starts in (
        ("requeued", requeued, 3),
        ("timed", timed, 2),
        ("term", term, 2),
        ("early", early, 2),
    ):
        run_dir = _run_dir(log_dir)
        assert run_dir.name.endswith(f"_job{jobs[name]}"), run_dir
        result = _result(run_dir)
        assert result["status"] == "ok", (name, result)
        assert result["requeues"] == starts - 1, (name, result)
        _assert_same_run(run_dir, ref)
        # Every start recorded itself in run_info.json; the first start's config stays.
        info = json.loads((run_dir / "run_info.json").read_text())
        assert len(info.get("resumes", [])) == result["requeues"]
        assert (run_dir / ".hydra" / "config.yaml").is_file()
    # The time limit's warning signal, not SLURM's kill, stopped the timed job's first start.
    assert (
        "SIGUSR2: the SLURM job is about to be stopped"
        in (timed / f"slurm-{jobs['timed']}.out").read_text()
    )


def _drop_checkpoints(log_dir: Path) -> None:
    """What a SIGKILL before the first checkpoint leaves: a run folder with no .ckpt."""
    for ckpt in log_dir.glob("train/runs/*/checkpoints/*.ckpt"):
        ckpt.unlink()


def test_sweep_runs_as_slurm_jobs_into_one_folder(tmp_path: Path) -> None:
    result = run_script(
        "train.py",
        "-m",
        "hydra/launcher=slurm",
        "hydra.launcher.partition=debug",
        "model=gan,vae",
        *[o for o in JOB_TINY if not o.startswith("model")],
        f"paths.log_dir={tmp_path}",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sacct" not in result.stderr  # accounting answers: no "status may be inaccurate"
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [j.name for j in jobs] == ["0", "1"]
    assert all(_result(j)["status"] == "ok" for j in jobs)
    assert all(_result(j)["slurm_job_id"] for j in jobs)
    summary = (sweep / "summary.md").read_text()
    assert "| 0 |" in summary and "| 1 |" in summary
    assert "| status | requeues |" in summary  # each job once, with its requeue count
    logs = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.*"))
    assert "srun` command is available" not in logs
    assert "weights_only` was not set" not in logs


def test_ddp_job_takes_its_ranks_from_slurm_and_matches_local_ddp(tmp_path: Path) -> None:
    """trainer=ddp_cpu trainer.devices=2 as one SLURM job with two tasks: one set of records,
    and the same rows and weights as the same run started locally."""
    tiny = [o for o in JOB_TINY if o != "trainer=cpu"]
    ddp = ["trainer=ddp_cpu", "trainer.devices=2", "++trainer.deterministic=true", *tiny]
    local = run_script("train.py", *ddp, f"hydra.run.dir={tmp_path / 'local'}", timeout=600)
    assert local.returncode == 0, local.stderr[-3000:]
    slurm = run_script(
        "train.py", "-m", "hydra/launcher=slurm", *ddp, f"paths.log_dir={tmp_path}", timeout=600
    )
    assert slurm.returncode == 0, slurm.stderr[-3000:]
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    job = sweep / "0"
    logs = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.*"))
    assert "Starting with 2 processes" in logs  # both SLURM tasks joined, as ranks 0 and 1
    assert not (sweep / "1").exists()
    assert _result(job)["status"] == "ok"
    _assert_same_run(job, tmp_path / "local")  # the rows appear once, as in the local run
    grids = sorted(p.name for p in (job / "samples").iterdir())
    assert grids == sorted(p.name for p in (tmp_path / "local" / "samples").iterdir())


def test_optuna_search_runs_its_trials_as_slurm_jobs(tmp_path: Path) -> None:
    """4 trials, 2 at a time, each a SLURM job; the study lives in SQLite, through which each
    job reports its validations to the pruner (median: no pruning before 4 trials finish).
    Every trial's job is requeued in its second epoch (pre-emption) and goes on in its folder
    and its trial: the trial is COMPLETE with each validation reported once."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    result = run_script(
        "train.py",
        "-m",
        "hydra/launcher=slurm",
        "hparams_search=gan_optuna",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=2",
        "hydra/sweeper/pruner=median",
        f"hydra.sweeper.storage={storage}",
        *[o for o in JOB_TINY if o != "trainer.max_epochs=1"],
        "trainer.max_epochs=2",
        "+callbacks.requeue._target_=tests.fault_injection.RequeueAt",
        "+callbacks.requeue.epoch=1",
        "+callbacks.requeue.batch=1",
        f"paths.log_dir={tmp_path}",
        timeout=900,
        every_2s=release_requeued_jobs,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    import optuna

    study = optuna.load_study(study_name="gan_optuna", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    assert all(list(t.intermediate_values) == [1, 2] for t in study.trials)  # from the jobs
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    results = [_result(sweep / str(n)) for n in range(4)]
    assert len({r["slurm_job_id"] for r in results}) == 4  # one SLURM job per trial
    assert [(r["status"], r["requeues"]) for r in results] == [("ok", 1)] * 4
    for n in range(4):  # one validation row per epoch: the requeue repeated none
        assert [r["epoch"] for r in _rows(sweep / str(n)) if r.get("val/fid")] == ["0", "1"]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["hydra.launcher.partition=nosuch"], "hydra.launcher.partition=nosuch: SLURM has no"),
        (["hydra.launcher.cpus_per_task=64"], "hydra.launcher.cpus_per_task=64 x tasks_per_node"),
        (["trainer=gpu"], "hydra.launcher.gpus_per_node=1 (from trainer.devices)"),
        (["hydra.launcher.mem_gb=100000"], "hydra.launcher.mem_gb=100000"),
        (["trainer=ddp"], "trainer.devices=-1 under hydra/launcher=slurm"),
    ],
    ids=["partition", "cpus", "gpus", "memory", "devices"],
)
def test_impossible_submissions_stop_with_one_line(
    tmp_path: Path, overrides: list[str], expected: str
) -> None:
    before = _queued()
    result = run_script(
        "train.py", "-m", "hydra/launcher=slurm", *overrides, f"paths.log_dir={tmp_path}"
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("genlab: error: ") and expected in last, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert _queued() == before  # nothing submitted, nothing left pending


def _queued() -> set[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True)
    return set(out.stdout.split())

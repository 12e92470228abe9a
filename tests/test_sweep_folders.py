"""One sweep, one folder: every job of a multirun lands in the sweep folder the parent announced,
whatever process runs it. Sweeper counts and the feature cache folder are checked before any
job or data; a search in which every trial failed ends with one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from genlab.errors import ConfigError
from genlab.resume.run_dir import OWNER_FILE, check_cache_dir
from genlab.sweeps import collect, sweep_settings_problem
from genlab.train import run
from tests.conftest import CONF, TINY, TINY_NETS, UNPRIVILEGED_ID, as_unprivileged, run_script

pytestmark = pytest.mark.filterwarnings("ignore")

# One batch per job (fast_dev_run), no test pass: these tests check where jobs land.
FAST_JOB = [*TINY, *TINY_NETS["gan"], "debug=fast", "test=false"]


def test_joblib_jobs_beyond_the_worker_count_land_in_the_announced_folder(tmp_path: Path) -> None:
    # 3 jobs over 2 loky workers, with the default hydra.sweep.dir (<time>_<id>): each worker
    # once resolved its own <id>, spreading the jobs over folders the summary never saw.
    lrs = ["1e-4", "2e-4", "4e-4"]
    result = run_script(
        "train.py", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
        f"model.optimizer.lr={','.join(lrs)}", *FAST_JOB, f"paths.log_dir={tmp_path}",
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    (sweep_dir,) = (tmp_path / "train" / "multiruns").iterdir()
    assert f"sweep output dir : {sweep_dir}" in output  # the folder announced is the one
    jobs = collect(sweep_dir)
    assert [(j.num, j.status) for j in jobs] == [("0", "ok"), ("1", "ok"), ("2", "ok")]
    assert [float(j.overrides["model.optimizer.lr"]) for j in jobs] == [float(v) for v in lrs]
    pids = {json.loads((j.dir / OWNER_FILE).read_text())["pid"] for j in jobs}
    assert len(pids) == 2, pids  # the jobs really ran in both workers
    lines = (sweep_dir / "summary.md").read_text().splitlines()
    rows = [line for line in lines if line.startswith(("| 0 |", "| 1 |", "| 2 |"))]
    assert len(rows) == 3 and all("| ok |" in row for row in rows)
    assert f"sweep summary: {sweep_dir / 'summary.md'}" in output
    assert (sweep_dir / "plot_val_fid_vs_model_optimizer_lr.png").stat().st_size > 1000


_SWEEP_DIR = """
from hydra import compose, initialize_config_dir
import genlab
with initialize_config_dir(config_dir={conf!r}, version_base="1.3"):
    cfg = compose("train", overrides=["hydra.mode=MULTIRUN"], return_hydra_config=True)
print(cfg.hydra.sweep.dir)
"""


def test_sweeps_started_together_in_two_processes_get_two_folders() -> None:
    code = _SWEEP_DIR.format(conf=str(CONF))
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    dirs = [Path(p.communicate(timeout=120)[0].strip()) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert dirs[0].parent == dirs[1].parent and dirs[0].parent.name == "multiruns"
    # <time>_<id>: the per-process id keeps sweeps of the same second apart.
    assert dirs[0].name.rsplit("_", 1)[1] != dirs[1].name.rsplit("_", 1)[1]


def _hydra_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["hydra.sweeper.n_trials=-1"], "hydra.sweeper.n_trials=-1: a search needs at least one"),
        (["hydra.sweeper.n_jobs=0"], "hydra.sweeper.n_jobs=0: the trials launched at once"),
        (["hydra/launcher=joblib", "hydra.launcher.n_jobs=0"], "hydra.launcher.n_jobs=0: joblib"),
        (["hydra.sweeper.n_trials=1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=-1"], None),
    ],
)
def test_sweeper_counts_that_cannot_run_are_named(overrides: list[str], message) -> None:
    problem = sweep_settings_problem(_hydra_cfg("hparams_search=gan_optuna", *overrides))
    if message is None:
        assert problem is None
    else:
        assert problem is not None and problem.startswith(message)


def test_a_search_without_trials_is_refused_before_any_folder(tmp_path: Path) -> None:
    result = run_script(
        "train.py", "-m", "hparams_search=gan_optuna", "hydra.sweeper.n_trials=0",
        f"paths.log_dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        "genlab: error: hydra.sweeper.n_trials=0: a search needs at least one trial: set "
        "hydra.sweeper.n_trials to 1 or more, e.g. hydra.sweeper.n_trials=20."
    ]
    assert not list(tmp_path.iterdir())  # no sweep folder, no job


def test_a_search_whose_every_trial_failed_ends_with_one_line(tmp_path: Path) -> None:
    # model.n_critic=0 is refused when each trial starts: no trial gives Optuna a value.
    result = run_script(
        "train.py", "-m", "hparams_search=gan_optuna", "hydra.sweeper.n_trials=2",
        "model.n_critic=0", *FAST_JOB, f"hydra.sweep.dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "No trials are completed" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        "genlab: error: none of the 2 trials gave a value of val/fid to optimise (job 0: "
        "ConfigError: model.n_critic=0 must be >= 1: fix the value on the command line or in "
        f"the config file). Fix that and run the search again; every job's outcome is in "
        f"{tmp_path / 'summary.md'}."
    )
    summary = (tmp_path / "summary.md").read_text()
    assert "| 0 |" in summary and "| 1 |" in summary and summary.count("| failed |") == 2


def test_a_cache_folder_that_is_a_file_stops_train_py_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    cache.write_text("not a folder")
    monkeypatch.setenv("GENLAB_CACHE_DIR", str(cache))
    run_dir = tmp_path / "run"
    result = run_script("train.py", *FAST_JOB, f"hydra.run.dir={run_dir}")
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        f"genlab: error: GENLAB_CACHE_DIR={cache}: cannot write the feature cache there (it is "
        "a file, not a folder). Point GENLAB_CACHE_DIR at a writable folder, or unset it to "
        "use the project's .cache/."
    ]
    assert not (run_dir / "checkpoints").exists()  # stopped before training
    assert json.loads((run_dir / "result.json").read_text())["status"] == "failed"


def test_a_cache_path_set_in_the_config_is_named_as_paths_cache_dir(make_cfg, tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    cfg = make_cfg(f"paths.cache_dir={blocker / 'cache'}", "debug=fast")
    with pytest.raises(ConfigError, match=r"^paths.cache_dir=.*/file/cache: cannot write the "
                       r"feature cache there \(part of that path is a file"):  # fmt: skip
        run(cfg)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()
    from genlab.evaluate import run as evaluate

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        eval_cfg = compose("eval", overrides=["ckpt_path=x.ckpt", f"paths.cache_dir={blocker}"])
    with pytest.raises(ConfigError, match=r"^paths.cache_dir=.*: cannot write the feature"):
        evaluate(eval_cfg)  # before the checkpoint is even looked for


def test_a_read_only_cache_folder_is_refused(
    unprivileged_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = unprivileged_dir / "cache"
    cache.mkdir()
    if os.geteuid() == 0:  # the switched user owns it, and still may not write there
        os.chown(cache, UNPRIVILEGED_ID, UNPRIVILEGED_ID)
    os.chmod(cache, 0o500)
    monkeypatch.setenv("GENLAB_CACHE_DIR", str(cache))
    with pytest.raises(ConfigError, match=r"^GENLAB_CACHE_DIR=.*: cannot write the feature "
                       r"cache there \(Permission denied\)\. Point GENLAB_CACHE_DIR at"):  # fmt: skip
        as_unprivileged(lambda: check_cache_dir(str(cache)))
    fresh = unprivileged_dir / "fresh"
    check_cache_dir(str(fresh))  # a missing folder is made, and passes
    assert fresh.is_dir()

"""genlab's Optuna sweeper: search spaces, pruning in-process and across processes, studies that
continue after a kill -9, several objectives, and what W&B and the summary show of a study."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from genlab.errors import ConfigError
from genlab.resolvers import sweep_group
from genlab.sweeps import collect
from genlab.sweeps.search import OptunaSearch
from genlab.sweeps.space import search_space
from genlab.sweeps.study import build_pruner, open_storage, open_study
from tests.conftest import CONF, JOB_TINY, ROOT, TINY, TINY_NETS, run_script

pytestmark = pytest.mark.filterwarnings("ignore")

# Two validations per trial (the pruner's steps), no test: these check the search, not models.
TWO_EPOCHS = [*TINY, *TINY_NETS["gan"], "debug=limit", "trainer.max_epochs=2", "test=false"]
# Prunes every trial at its first validation: val/fid is never below 0.
PRUNE_ALL = ["hydra/sweeper/pruner=threshold", "hydra.sweeper.pruner.upper=0.0"]


def _study(sweep_dir: Path, name: str = "gan_optuna") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{sweep_dir / 'optuna.db'}")


def _validations(run_dir: Path) -> int:
    text = (run_dir / "metrics.csv").read_text().splitlines()
    column = text[0].split(",").index("val/fid")
    return sum(1 for row in text[1:] if row.split(",")[column])


# --- the search space ------------------------------------------------------------------------


def test_hydra_sweep_syntax_becomes_optuna_distributions_and_back() -> None:
    space = search_space(
        {
            "model.optimizer.lr": "tag(log, interval(5e-5, 1e-3))",
            "model.beta": "interval(0.5, 2.0)",
            "model.kl_schedule": "choice(constant, linear)",
            "model.n_critic": "range(1, 6, 2)",
        },
        ["model.latent_dim=32,64", "trainer.max_epochs=3"],
    )
    d = space.distributions
    assert d["model.optimizer.lr"] == FloatDistribution(5e-5, 1e-3, log=True)
    assert d["model.beta"] == FloatDistribution(0.5, 2.0)
    assert d["model.kl_schedule"] == CategoricalDistribution(["constant", "linear"])
    assert d["model.n_critic"] == IntDistribution(1, 5, step=2)
    assert d["model.latent_dim"] == CategoricalDistribution([32, 64])
    assert space.fixed == ["trainer.max_epochs=3"]
    assert space.size() is None  # continuous parameters: no finite list of points
    overrides = space.overrides({"model.kl_schedule": "linear", "model.beta": 1.0})
    assert overrides == ["trainer.max_epochs=3", "model.kl_schedule=linear", "model.beta=1.0"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"model.beta": "interval(2.0, 1.0)"}, "model.beta: interval(2.0, 1.0) needs start < end"),
        ({"model.lr": "tag(log, interval(0, 1))"}, "needs start > 0"),
        ({"model.k": "choice(1, 1)"}, "model.k: choice(1, 1) repeats a value"),
    ],
)
def test_a_search_space_that_cannot_be_searched_is_named(params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        search_space(params, [])


def _search(tmp_path: Path, **settings) -> tuple[OptunaSearch, optuna.Study, object]:
    search = OptunaSearch(study_name="s", **settings)
    search.sweep_dir = tmp_path
    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = open_study(study_name="s", storage=storage, directions=["minimize"],
                       sampler_factory=search._sampler, pruner=build_pruner(None))  # fmt: skip
    return search, study, storage


def test_a_finite_space_runs_each_point_once_then_stops(tmp_path: Path) -> None:
    sampler = {"_target_": "optuna.samplers.RandomSampler", "seed": 0}
    search, study, _ = _search(tmp_path, sampler=sampler)
    space = search_space({"a": "choice(1, 2)", "b": "choice(x, y)"}, [])
    seen = []
    for job in range(5):
        trial = search._new_trial(study, space, job)
        if trial is None:
            break
        seen.append(tuple(sorted(trial.params.items())))
        study.tell(trial, 1.0)
    assert len(seen) == 4 == len(set(seen))  # every point once, then None
    repeats = [t for t in study.trials if t.user_attrs.get("duplicate_of") is not None]
    assert all(t.state == TrialState.FAIL for t in repeats)  # recorded, never run


def test_a_continued_study_does_not_replay_its_seeded_points(tmp_path: Path) -> None:
    # A study rerun with the same seed used to propose its first points again.
    sampler = {"_target_": "optuna.samplers.TPESampler", "seed": 3, "n_startup_trials": 5}
    space = search_space({"lr": "tag(log, interval(1e-5, 1e-2))", "k": "choice(1, 2, 3)"}, [])
    first = []
    for _ in range(2):  # two processes running the same command one after the other
        search, study, _ = _search(tmp_path, sampler=sampler)
        for job in range(3):
            trial = search._new_trial(study, space, job)
            first.append(tuple(sorted(trial.params.items())))
            study.tell(trial, 1.0)
    assert len(set(first)) == 6


# --- searches as users run them --------------------------------------------------------------


def test_pruned_trials_stop_cleanly_keep_their_folders_and_are_marked(tmp_path: Path) -> None:
    result = run_script(
        "train.py", "-m", "hparams_search=gan_optuna", "hydra.sweeper.n_trials=2", *PRUNE_ALL,
        *TWO_EPOCHS, f"hydra.sweep.dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    study = _study(tmp_path)
    assert [t.state.name for t in study.trials] == ["PRUNED", "PRUNED"]
    for job in collect(tmp_path):
        assert job.result["status"] == "pruned" and job.result["pruned_after_validation"] == 1
        assert _validations(job.dir) == 1  # stopped after the first of two validations
        assert (job.dir / "checkpoints" / "last.ckpt").is_file()
        # The trial number and parameters are in the run's logged config (W&B's too).
        logged = yaml.safe_load((job.dir / "hparams.yaml").read_text())["optuna"]
        assert (
            logged["study"] == "gan_optuna"
            and logged["params"] == study.trials[int(job.num)].params
        )
    summary = (tmp_path / "summary.md").read_text()
    assert "| 0 | 0 | PRUNED |" in summary and "2 pruned" in summary
    assert "- job 1: after validation 1, val/fid = " in summary
    assert "Not finished" not in summary
    assert "every trial was pruned" in result.stdout + result.stderr
    assert (tmp_path / "plot_study_history.png").is_file()


def test_pruning_reaches_trials_in_other_processes_through_the_storage(tmp_path: Path) -> None:
    # joblib: each trial in a worker process, which reports to the study's SQLite file.
    result = run_script(
        "train.py", "-m", "hparams_search=gan_optuna", "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=2",
        *PRUNE_ALL, *TWO_EPOCHS, f"hydra.sweep.dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    trials = _study(tmp_path).trials
    assert [t.state.name for t in trials] == ["PRUNED", "PRUNED"]
    # Only the workers saw the validations: the sweeper learnt them from the storage.
    assert all(t.intermediate_values.keys() == {1} for t in trials)
    assert "Joblib" in result.stdout + result.stderr


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.2)


@pytest.mark.slow
def test_a_study_killed_mid_trial_continues_without_repeating_points(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    command = [
        sys.executable, str(ROOT / "train.py"), "-m", "hparams_search=gan_optuna",
        "hydra.sweeper.n_trials=3", f"hydra.sweeper.storage={storage}", *TWO_EPOCHS,
    ]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen([*command, f"hydra.sweep.dir={tmp_path / 'a'}"], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    # Trial 1 has started training (its first checkpoint): kill the sweeper, job and all.
    _wait_for(tmp_path / "a" / "1" / "checkpoints" / "last.ckpt", first)
    first.send_signal(signal.SIGKILL)
    first.wait()
    study = optuna.load_study(study_name="gan_optuna", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "RUNNING"]

    again = run_script(*command[1:], f"hydra.sweep.dir={tmp_path / 'b'}", timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    trials = optuna.load_study(study_name="gan_optuna", storage=storage).trials
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") + states.count("PRUNED") == 3, states
    assert trials[1].state.name == "FAIL" and "stale" in trials[1].user_attrs["outcome"]
    points = [tuple(sorted(t.params.items())) for t in trials if t.state.name == "COMPLETE"]
    assert len(points) == len(set(points)) == 3  # the rerun proposed new points
    # The summary of the rerun covers the whole study, the killed run's folders included.
    summary = (tmp_path / "b" / "summary.md").read_text()
    assert "| a/0 | 0 | COMPLETE |" in summary and "| a/1 | 1 | FAIL |" in summary
    assert "3 of 3 trials done" in summary


def test_two_objectives_give_a_pareto_front_naming_run_folders(tmp_path: Path) -> None:
    result = run_script(
        "train.py", "-m", "hparams_search=gan_optuna", "hydra.sweeper.n_trials=3",
        "hydra/sweeper/sampler=nsgaii", "hydra.sweeper.sampler.seed=0",
        "hydra.sweeper.directions=[minimize,minimize]",
        "hydra.sweeper.objectives=[val/fid,minutes]", *JOB_TINY, "test=false",
        f"hydra.sweep.dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    trials = _study(tmp_path).trials
    assert all(t.state.name == "COMPLETE" and len(t.values) == 2 for t in trials)
    results = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    front = results["solutions"]
    assert front and all(Path(s["run_dir"]).parent == tmp_path for s in front)
    summary = (tmp_path / "summary.md").read_text()
    assert "Pareto front (val/fid (minimize), minutes (minimize)):" in summary
    for solution in front:
        assert f"| job {Path(solution['run_dir']).name} |" in summary
    assert (tmp_path / "plot_pareto_front.png").is_file()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"objectives": ["val/fid"]}, "must have one entry each per objective"),
        (
            {"objectives": ["val/fid", "minutes"],
             "pruner": {"_target_": "optuna.pruners.MedianPruner"}},
            "Optuna prunes single-objective studies only",
        ),
    ],
)  # fmt: skip
def test_two_objectives_refuse_a_pruner_and_mismatched_lists(settings, message) -> None:
    search = OptunaSearch(directions=["minimize", "minimize"], **settings)
    with initialize_config_dir(str(CONF), version_base=None):
        cfg = compose("train", return_hydra_config=True)
    with pytest.raises(ConfigError, match=message):
        search.setup(hydra_context=None, task_function=None, config=cfg, validate=None)


def test_wandb_groups_a_search_by_its_study() -> None:
    with initialize_config_dir(str(CONF), version_base=None):
        cfg = compose(
            "train",
            ["hparams_search=gan_optuna", "hydra.sweep.dir=outputs/x", "hydra.sweeper.trial=3"],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    try:
        assert sweep_group() == "gan_optuna"  # the same for every rerun that continues it
    finally:  # later tests call train.run in this process: it must not look like a trial
        HydraConfig.instance().cfg = None


@pytest.mark.parametrize(
    ("override", "line"),
    [
        (
            "hydra.sweeper.directions=[minimize,up]",
            "hydra.sweeper.directions: 'up' is not minimize or maximize: set "
            "hydra.sweeper.direction=minimize (or maximize), or directions=[...] for several "
            "objectives.",
        ),
        (
            "+hydra.sweeper.custom_search_space=my.space",
            "hydra.sweeper.custom_search_space is not a setting of genlab's Optuna sweeper: "
            "remove it (docs/sweeps.md lists the settings, and what replaced "
            "hydra-optuna-sweeper's).",
        ),
        ("model.optimizer.lr=interval(2,1)", "model.optimizer.lr: interval(2.0, 1.0) needs "
         "start < end."),
    ],
    ids=["direction", "old-setting", "empty-interval"],
)  # fmt: skip
def test_search_settings_that_cannot_work_end_in_one_line(
    tmp_path: Path, override: str, line: str
) -> None:
    result = run_script(
        "train.py", "-m", "hparams_search=gan_optuna", override, f"hydra.sweep.dir={tmp_path}"
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == f"genlab: error: {line}"
    assert not list(tmp_path.glob("*/result.json"))  # no trial ran

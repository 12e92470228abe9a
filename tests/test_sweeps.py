"""Sweeps as users run them: Optuna search, launchers, the sweep summary, W&B grouping/resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from genlab.config.launcher import strategy_for_launcher
from genlab.errors import ConfigError
from genlab.resolvers import override_tags, sweep_group
from genlab.sweeps import collect, summarize, write_result
from tests.conftest import CONF, JOB_TINY, ROOT, run_script

pytestmark = pytest.mark.filterwarnings("ignore")

JOB = JOB_TINY  # these tests check the sweep machinery, not the models


def _summary_rows(sweep_dir: Path) -> list[str]:
    return (sweep_dir / "summary.md").read_text().splitlines()


def test_optuna_sweep_records_failed_trials_and_resumes(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    # n_critic=0 is rejected by the GAN: with seed 42 the sampler draws it for trials 1 and 2,
    # which must be recorded as FAIL while the sweep goes on.
    args = [
        "-m", "hparams_search=gan_optuna", "hydra.sweeper.n_trials=3",
        "model.n_critic=choice(0,1)", f"hydra.sweeper.storage={storage}", *JOB,
    ]  # fmt: skip
    result = run_script("train.py", *args, f"hydra.sweep.dir={tmp_path / 'a'}")
    assert result.returncode == 0, result.stderr[-3000:]
    best = yaml.safe_load((tmp_path / "a" / "optimization_results.yaml").read_text())
    assert best["best_params"]["model.n_critic"] == 1 and best["best_value"] > 0

    import optuna

    study = optuna.load_study(study_name="gan_optuna", storage=storage)
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") >= 1 and states.count("FAIL") >= 1, states
    statuses = {json.loads((j.dir / "result.json").read_text())["status"] for j in
                collect(tmp_path / "a")}  # fmt: skip
    assert statuses == {"ok", "failed"}
    # The summary names the best job's checkpoint, which exists, and the failure's cause.
    summary = (tmp_path / "a" / "summary.md").read_text()
    checkpoint = summary.split("Checkpoint: ")[1].split()[0]
    assert Path(checkpoint).is_file()
    assert "n_critic=0 must be >= 1" in summary
    assert list((tmp_path / "a").glob("plot_val_fid_vs_*.png"))
    assert "best job" in result.stderr + result.stdout

    # Same storage and study name: the study continues instead of starting over. n_trials
    # counts its completed trials, so asking for one more than it has runs one more.
    args[2] = f"hydra.sweeper.n_trials={states.count('COMPLETE') + 1}"
    result = run_script("train.py", *args, f"hydra.sweep.dir={tmp_path / 'b'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(optuna.load_study(study_name="gan_optuna", storage=storage).trials) == 4
    # Its summary covers the whole study: the first sweep's jobs too, by their folders.
    summary = (tmp_path / "b" / "summary.md").read_text()
    assert "| a/0 | 0 | " in summary and "| 0 | 3 | " in summary


def test_plain_multirun_with_a_failed_job_still_writes_the_summary(tmp_path: Path) -> None:
    # model.n_critic=0 is rejected when the model is built. Hydra's basic sweeper runs both jobs,
    # then re-raises job 0's error instead of ending the multirun: the summary is written anyway.
    result = run_script(
        "train.py", "-m", "model.n_critic=0,1", *JOB, f"hydra.sweep.dir={tmp_path}"
    )  # fmt: skip
    output = result.stderr + result.stdout
    error = "model.n_critic=0 must be >= 1: fix the value"
    assert result.returncode == 1, output[-3000:]  # a job failed: the command says so
    assert f"genlab: error: {error}" in output
    assert [j.status for j in collect(tmp_path)] == ["failed", "ok"]
    summary = (tmp_path / "summary.md").read_text()
    assert "| 0 | 0 | failed |" in summary and "| 1 | 1 | ok |" in summary
    assert f"- job 0: ConfigError: {error}" in summary
    assert "Best: job 1 " in summary and (tmp_path / "summary.csv").is_file()
    assert "1 of 2 jobs did not finish (listed in summary.md): job 0" in output


# The joblib launcher: tests/test_sweep_folders.py (jobs in parallel processes, one folder).


@pytest.mark.slow
def test_submitit_local_launcher_runs_jobs_into_one_folder(tmp_path: Path) -> None:
    # Each job is its own submitit process; all of them use the parent's default sweep folder.
    fast = [o for o in JOB if o not in ("debug=limit", "trainer.max_epochs=1")]
    result = run_script(
        "train.py", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5",
        "seed=1,2", *fast, "debug=fast", "test=false", f"paths.log_dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "train" / "multiruns").iterdir()
    assert [j.status for j in collect(sweep_dir)] == ["ok", "ok"]
    assert "| 1 | 2 | ok |" in (sweep_dir / "summary.md").read_text()


@pytest.fixture(autouse=True)
def _reset_hydra_config():
    """Tests below set HydraConfig as a job would; later tests must not see it."""
    yield
    HydraConfig.instance().cfg = None


def _with_hydra(*overrides: str):
    """A composed train config with HydraConfig set, as inside a running job."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def test_slurm_launcher_gives_one_task_per_device() -> None:
    cfg = _with_hydra(
        "hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2",
        "hydra.launcher.partition=gpu", "hydra.mode=MULTIRUN", "hydra.sweep.dir=/tmp/x",
    )  # fmt: skip
    launcher = cfg.hydra.launcher
    assert "SlurmLauncher" in launcher._target_
    assert launcher.tasks_per_node == launcher.gpus_per_node == 4
    assert launcher.nodes == 2 and launcher.partition == "gpu"
    assert strategy_for_launcher(cfg) is None  # SLURM starts the ranks: plain ddp stays
    cfg = _with_hydra(
        "hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4",
        "hydra.launcher.tasks_per_node=1", "hydra.mode=MULTIRUN", "hydra.sweep.dir=/tmp/x",
    )  # fmt: skip
    with pytest.raises(ConfigError, match="one task per device"):
        strategy_for_launcher(cfg)


def test_local_multirun_turns_ddp_into_ddp_spawn() -> None:
    cfg = _with_hydra("trainer=ddp", "hydra.mode=MULTIRUN", "hydra.sweep.dir=/tmp/x")
    assert strategy_for_launcher(cfg) == "ddp_spawn_find_unused_parameters_true"
    assert cfg.trainer.strategy == "ddp_find_unused_parameters_true"  # the config is unchanged
    cfg = _with_hydra("trainer=ddp", "hydra.mode=RUN")  # a single run keeps plain ddp
    assert strategy_for_launcher(cfg) is None


def test_wandb_group_and_tags_come_from_the_sweep() -> None:
    _with_hydra(
        "hydra.mode=MULTIRUN", "hydra.sweep.dir=outputs/train/multiruns/2026-01-01_10-00",
        "model.optimizer.lr=0.0002", "hydra.verbose=true",
    )  # fmt: skip
    assert sweep_group() == f"{HydraConfig.get().job.name}-2026-01-01_10-00"
    assert override_tags() == ["model.optimizer.lr=0.0002"]
    _with_hydra("hydra.mode=RUN")
    assert sweep_group() is None


def test_summary_picks_the_best_by_the_monitor_mode(tmp_path: Path) -> None:
    # A VAE sweep maximises val/elbo: the best job is the highest, not the lowest.
    for num, (beta, elbo) in enumerate([("0.5", -110.0), ("1.0", -95.0), ("4.0", None)]):
        job = tmp_path / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- model.beta={beta}\n- seed=1\n")
        result = {"status": "ok" if elbo else "failed", "monitor": "val/elbo",
                  "monitor_mode": "max", "best_score": elbo,
                  "metrics": {"val/elbo": elbo, "test/nll_nats": -elbo - 3} if elbo else {},
                  "error": None if elbo else "DivergenceError: loss is nan at step 12"}  # fmt: skip
        write_result(job, result)
    summary = summarize(tmp_path)
    assert summary["params"] == ["model.beta"]  # seed=1 is shared: not a swept parameter
    assert summary["best"].num == "1"
    rows = _summary_rows(tmp_path)
    assert rows[0].startswith("| job | model.beta | status | best | val/elbo | test/nll_nats")
    assert "job 2: DivergenceError: loss is nan at step 12" in summary["markdown"]
    assert [p.name for p in summary["plots"]] == ["plot_val_elbo_vs_model_beta.png"]


def test_summary_of_a_sweep_across_models_names_no_best(tmp_path: Path) -> None:
    # model=gan,vae: a GAN's val/fid (lower is better) cannot be ranked against a val/elbo.
    runs = [("gan", "val/fid", "min", 20.0), ("vae", "val/elbo", "max", -95.0)]
    for num, (model, monitor, mode, score) in enumerate(runs):
        job = tmp_path / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- model={model}\n")
        write_result(job, {"status": "ok", "monitor": monitor, "monitor_mode": mode,
                           "best_score": score, "metrics": {monitor: score}})  # fmt: skip
    summary = summarize(tmp_path)
    assert summary["best"] is None
    assert "Best: job" not in summary["markdown"]
    assert (
        "No best job: the jobs monitor different metrics (val/fid (min), val/elbo (max)"
        in (summary["markdown"])
    )


def test_summarize_cli_on_a_missing_directory_is_one_line(tmp_path: Path) -> None:
    result = run_script("-m", "genlab.sweeps", "summarize", str(tmp_path / "nope"))
    assert result.returncode != 0
    assert "not a directory" in result.stderr.strip().splitlines()[-1]


def test_wandb_sweep_example_sets_real_config_keys() -> None:
    spec = yaml.safe_load((ROOT / "sweeps" / "wandb_dcgan_mnist.yaml").read_text())
    overrides = []
    for key, space in spec["parameters"].items():
        value = space.get("value", space.get("min", (space.get("values") or [None])[0]))
        overrides.append(f"{key}={value}")
    fixed = [a for a in spec["command"] if "=" in a and not a.startswith("$")]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[*fixed, *overrides])  # unknown keys would raise
    assert cfg.model.optimizer.lr == 5.0e-5 and cfg.model.latent_dim == 64
    assert spec["metric"]["name"] == cfg.model.monitor

"""Shared fixtures: compose the real configs with Hydra's compose API, shrunk to CPU-test size."""

from __future__ import annotations

import functools
import os
import pickle
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

import genlab  # noqa: F401  (registers resolvers)
from genlab.resume.slurm import FINISHED_STATES, job_fields

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SHIPPED = ROOT / "data"  # the MNIST files the repo ships

# Tiny nets and few batches: the whole suite must fit in minutes on 2 CPU cores.
TINY = [
    "data.batch_size=16",
    "data.train_fraction=0.01",
    "data.num_workers=0",
    "extras.print_config=false",
    "callbacks.progress_bar=null",
    "callbacks.fid.num_samples=64",
    "callbacks.fid.test_num_samples=64",
    "callbacks.fid.num_real=256",
    "trainer=cpu",
]
TINY_NETS = {
    "gan": ["model.generator.width=8", "model.discriminator.width=8", "model.latent_dim=8"],
    "vae": [
        "model.encoder.width=8",
        "model.decoder.width=8",
        "model.latent_dim=4",
        "model.iwae_samples_test=20",
    ],
    "vaegan": [
        "model.encoder.width=8",
        "model.decoder.width=8",
        "model.discriminator.width=8",
        "model.latent_dim=4",
    ],
}


# One short tiny GAN epoch per job: for tests of the run machinery (sweeps, notebooks).
JOB_TINY = [*TINY, *TINY_NETS["gan"], "debug=limit", "trainer.max_epochs=1"]


@pytest.fixture(scope="session", autouse=True)
def _feature_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """One cache of real features per test session (shared with subprocesses), never the
    developer's own .cache/."""
    os.environ["GENLAB_CACHE_DIR"] = str(tmp_path_factory.mktemp("feature_cache"))


@pytest.fixture(autouse=True)
def _offline_wandb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


@functools.cache  # one compose per model config for the whole suite
def tiny_nets(model: str) -> tuple[str, ...]:
    """Overrides that shrink ``conf/model/<model>.yaml``'s nets, by the family its class belongs
    to (wgan_gp, hinge_gan, ... share the GAN's nets; beta_vae the VAE's). Any other model (a
    researcher's own) runs as its config says, so keep a new model's defaults cheap."""
    from hydra.utils import get_class

    from genlab.models.gan import GAN
    from genlab.models.vae import VAE
    from genlab.models.vaegan import VAEGAN

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        target = get_class(
            compose(config_name="train", overrides=[f"model={model}"]).model._target_
        )
    for family, cls in (("vaegan", VAEGAN), ("gan", GAN), ("vae", VAE)):
        if issubclass(target, cls):
            return tuple(TINY_NETS[family])
    return ()


def tiny_overrides(model: str = "gan") -> list[str]:
    return [f"model={model}", *TINY, *tiny_nets(model)]


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """``make_cfg("model=vae", ...)`` -> a composed train config writing under ``tmp_path``."""

    def _make(*overrides: str, config_name: str = "train", tiny: bool = True) -> DictConfig:
        model = next((o.split("=", 1)[1] for o in overrides if o.startswith("model=")), "gan")
        extra = tiny_overrides(model) if tiny and config_name == "train" else []
        if any(o.startswith("trainer=") for o in overrides):  # the test picks the accelerator
            extra = [o for o in extra if o != "trainer=cpu"]
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=[*extra, *overrides])
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "run")
        return cfg

    return _make


def framework_trainer(**kwargs: Any) -> Any:
    """A ``pl.Trainer`` with genlab's framework callbacks (scheduler stepping, clipping,
    compile/channels_last, log_latest, per-rank seeding, the stop before a batch), as
    ``genlab.train.run`` installs them; ``callbacks=[...]`` are added before them."""
    import pytorch_lightning as pl

    from genlab.callbacks.framework import framework_callbacks

    callbacks = [*kwargs.pop("callbacks", []), *framework_callbacks()]
    return pl.Trainer(callbacks=callbacks, **kwargs)


def run_script(
    script: str,
    *args: str,
    cwd: Path = ROOT,
    timeout: int = 300,
    every_2s: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess:
    """Run an entry point as a user would (a fresh process) and capture its output;
    ``every_2s()`` runs while it does (e.g. ``release_requeued_jobs``)."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"}
    # "train.py" -> the repo's script; "-m" -> a module (``run_script("-m", "pkg.mod")``)
    cmd = [sys.executable, script if script.startswith("-") else str(ROOT / script), *args]
    if every_2s is None:
        return subprocess.run(
            cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
        )
    deadline = time.monotonic() + timeout
    with subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        while True:
            try:  # communicate keeps reading the pipes across its timeouts: they never fill
                out, err = proc.communicate(timeout=2)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    proc.kill()
                    proc.communicate()
                    raise
                every_2s()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


# --- running as an unprivileged user -------------------------------------------------------------

UNPRIVILEGED_ID = 65534  # uid and gid of nobody/nogroup on most Linux systems
T = TypeVar("T")


def permissions_bite() -> bool:
    """True where file modes stop this process: False as root (CAP_DAC_OVERRIDE writes into
    a read-only folder), which is how CI runs."""
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o500)
        try:
            Path(folder, "probe").touch()
        except PermissionError:
            return True
        finally:
            os.chmod(folder, 0o700)
    return False


@pytest.fixture
def unprivileged_dir() -> Iterator[Path]:
    """An empty folder that ``as_unprivileged`` code owns. (``tmp_path`` sits below a folder
    only root may enter, so the switched user could not reach it.)"""
    folder = Path(tempfile.mkdtemp(prefix="genlab-unprivileged-"))
    if os.geteuid() == 0:
        os.chown(folder, UNPRIVILEGED_ID, UNPRIVILEGED_ID)
    try:
        yield folder
    finally:
        for sub, _, _ in os.walk(folder):  # a test's read-only folders must not block cleanup
            os.chmod(sub, 0o700)
        shutil.rmtree(folder, ignore_errors=True)


def as_unprivileged(fn: Callable[[], T], timeout: float = 60) -> T:
    """``fn()`` where file permissions bite, its result returned and its exception raised here.

    Unprivileged already: called directly. As root (CI): run in a forked child that drops to
    uid/gid 65534 without supplementary groups, which also clears its capabilities. A fork
    rather than ``setpriv``/``runuser`` + a new interpreter: the child needs neither those
    tools nor read access to the venv or the repo. Modules ``fn`` imports lazily should be
    imported first (a root-only Python install would be unreadable after the switch). Skips
    only where no switch is possible: a non-root user whom modes do not stop, or a system
    without uid 65534 (e.g. a user namespace that does not map it)."""
    if permissions_bite():
        return fn()
    if os.geteuid() != 0:
        pytest.skip("file modes do not stop this user (CAP_DAC_OVERRIDE?) and only root can switch")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read_end)
            try:
                os.setgroups([])
                os.setresgid(UNPRIVILEGED_ID, UNPRIVILEGED_ID, UNPRIVILEGED_ID)
                os.setresuid(UNPRIVILEGED_ID, UNPRIVILEGED_ID, UNPRIVILEGED_ID)
                if not permissions_bite():
                    raise PermissionError("file modes still do not bite after the switch")
            except OSError as err:
                outcome = ("skip", f"cannot switch to uid {UNPRIVILEGED_ID}: {err}")
            else:
                try:
                    outcome = ("ok", fn())
                except BaseException as err:  # handed to the parent, raised there
                    outcome = ("raised", err)
            try:
                payload = pickle.dumps(outcome)
            except Exception as err:  # an unpicklable result or exception: its text
                payload = pickle.dumps(("raised", RuntimeError(f"{outcome!r} ({err})")))
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(payload)
        finally:
            os._exit(0)
    os.close(write_end)
    chunks, deadline = [], time.monotonic() + timeout
    with os.fdopen(read_end, "rb") as pipe:
        while True:
            ready, _, _ = select.select([pipe], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"as_unprivileged: the child ran past {timeout} s")
            chunk = os.read(pipe.fileno(), 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    os.waitpid(pid, 0)
    if not chunks:
        pytest.fail("as_unprivileged: the child died without an answer")
    status, value = pickle.loads(b"".join(chunks))
    if status == "skip":
        pytest.skip(value)
    if status == "raised":
        raise value
    return value


# --- class-conditional stand-ins -----------------------------------------------------------------


class ClassOracle:
    """A stand-in class-conditional model (``num_classes`` > 0) without a net: ``sample(n,
    generator, labels)`` returns real ``images`` of the requested classes, drawn with
    ``generator`` (uniform classes without ``labels``). ``ignore_labels=True``: images of
    random classes whatever is asked for, a model that never learnt its labels. Duck-typed like
    a LightningModule as far as sampling and eval.py reach (``device``, ``to``, ``eval``)."""

    training = False

    def __init__(
        self, images: Any, labels: Any, num_classes: int = 10, ignore_labels: bool = False
    ) -> None:
        import torch

        self.images, self.num_classes, self.ignore_labels = images, num_classes, ignore_labels
        self.order = labels.argsort(stable=True)  # the images' indices, class by class
        counts = torch.bincount(labels, minlength=num_classes)
        if not bool((counts > 0).all()):
            raise ValueError(f"every class needs an image: counts {counts.tolist()}")
        self.counts, self.starts = counts, counts.cumsum(0) - counts
        self.device = torch.device("cpu")

    def to(self, *args: Any, **kwargs: Any) -> ClassOracle:
        return self

    def eval(self) -> ClassOracle:
        return self

    def train(self, mode: bool = True) -> ClassOracle:
        return self

    def sample(self, n: int, generator: Any = None, labels: Any = None) -> Any:
        import torch

        if labels is None or self.ignore_labels:
            return self.images[torch.randint(len(self.images), (n,), generator=generator)]
        labels = labels.cpu()
        offset = (torch.rand(n, generator=generator) * self.counts[labels]).long()
        return self.images[self.order[self.starts[labels] + offset]]


# --- SLURM (tests/test_slurm.py) ---------------------------------------------------------------


def _slurm_answers() -> str | None:
    """None when a SLURM controller answers with an idle node, else why not."""
    if shutil.which("sinfo") is None:
        return "sinfo is not installed"
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError) as err:
        return str(err)
    if out.returncode != 0:
        return out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "sinfo failed"
    if not {"idle", "mix", "alloc"} & set(out.stdout.split()):
        return f"no node is up (sinfo: {out.stdout.split()})"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """A SLURM to submit to: skipped with one line where none answers, a failure in CI
    (``GENLAB_REQUIRE_SLURM=1``, set by .ci/run after scripts/slurm_local.sh up)."""
    problem = _slurm_answers()
    if problem is None:
        return
    message = f"no SLURM here ({problem}): scripts/slurm_local.sh up starts a one-node one"
    if os.environ.get("GENLAB_REQUIRE_SLURM") == "1":
        pytest.fail(message)
    pytest.skip(message)


def sbatch(script: Path, *args: str, options: list[str] = ()) -> str:
    """Submit ``script args`` from the repo root; the job id."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}  # fmt: skip
    out = subprocess.run(
        ["sbatch", "--parsable", *options, str(script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().split(";")[0]


def release_requeued_jobs() -> None:
    """Start now every job that SLURM holds after a requeue (reason BeginTime, ~2 minutes)."""
    listed = subprocess.run(["squeue", "-h", "-o", "%i %r"], capture_output=True, text=True)
    for line in listed.stdout.splitlines():
        job, _, reason = line.partition(" ")
        if reason.strip() == "BeginTime":
            _start_now(job)


def _start_now(job: str) -> None:
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"])


def _job_states(ids: list[str]) -> dict[str, tuple[str, str, int]]:
    """id -> (state, reason, restarts) from scontrol (jobs stay listed a while after ending)."""
    states = {}
    for job in ids:
        fields = job_fields(job) or {}
        states[job] = (
            fields.get("JobState", "UNKNOWN"),
            fields.get("Reason", ""),
            int(fields.get("Restarts", "0") or 0),
        )
    return states


def wait_for_jobs(
    ids: list[str],
    timeout: float,
    until: Callable[[], bool] | None = None,
    on_restart: Callable[[str], None] | None = None,
) -> dict[str, str]:
    """Wait until every job has finished (or ``until()`` holds); their final states.

    A requeued job waiting out SLURM's hold (reason BeginTime) is released at once; before
    that, ``on_restart(job id)`` runs (a test's chance to change the folder between starts)."""
    deadline = time.monotonic() + timeout
    while True:
        states = _job_states(ids)
        if until is not None and until():
            return {k: v[0] for k, v in states.items()}
        if until is None and all(s in FINISHED_STATES for s, _, _ in states.values()):
            return {k: v[0] for k, v in states.items()}
        for job, (state, reason, _) in states.items():
            if state == "PENDING" and reason == "BeginTime":
                if on_restart is not None:
                    on_restart(job)
                _start_now(job)
        if time.monotonic() > deadline:
            subprocess.run(["scancel", *ids])
            raise TimeoutError(f"SLURM jobs not done in {timeout} s: {states}")
        time.sleep(2)

"""Run folders are owned, resume= continues where the user points, mistakes are one line.

Every case here once lost or mixed up data, or ended in a traceback: two runs in one folder, a
resume that wrote into the folder stored in the checkpoint, a read-only checkpoints/ folder
found after an epoch, library errors for values genlab can check before loading data, and a
W&B server that answers but is not W&B.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from genlab.config.cli import user_error
from genlab.config.validation import validate
from genlab.errors import ConfigError, RunDirBusy
from genlab.loggers.wandb_offline import offline_overrides, wandb_offline_reason
from genlab.resume.command import relocate, resume_config
from genlab.resume.run_dir import OWNER_FILE, owned_run_dir, refuse_if_owned
from genlab.train import run
from tests.conftest import ROOT, run_script, tiny_overrides

ONE_EPOCH = ["debug=limit", "trainer.max_epochs=1", "test=false"]


def _hold(directory: Path) -> subprocess.Popen:
    """Another live process holding ``directory`` (as a running train.py does)."""
    code = (
        "import sys, time\n"
        "from genlab.resume.run_dir import owned_run_dir\n"
        f"with owned_run_dir({str(directory)!r}):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_live_run_owns_its_folder_and_a_killed_one_does_not(tmp_path: Path) -> None:
    holder = _hold(tmp_path)
    try:
        with pytest.raises(RunDirBusy, match=f"process {holder.pid} on"):
            refuse_if_owned(tmp_path)
        with pytest.raises(RunDirBusy), owned_run_dir(tmp_path):
            pass
    finally:
        holder.kill()  # SIGKILL: no cleanup runs, the kernel drops the lock
        holder.wait()
    assert (tmp_path / OWNER_FILE).is_file()  # the record stays, the claim does not
    refuse_if_owned(tmp_path)
    with owned_run_dir(tmp_path):
        owner = json.loads((tmp_path / OWNER_FILE).read_text())
        assert owner["pid"] == os.getpid()


def test_a_second_train_py_in_a_used_folder_is_refused_before_writing(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = _hold(run_dir)
    try:
        result = run_script("train.py", *tiny_overrides(), *ONE_EPOCH, f"hydra.run.dir={run_dir}")
    finally:
        holder.kill()
        holder.wait()
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("genlab: error:") and "is in use by process" in lines[0]
    assert sorted(p.name for p in run_dir.iterdir()) == [OWNER_FILE]  # nothing written


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path: Path) -> None:
    args = [*tiny_overrides(), "debug=fast", f"paths.log_dir={tmp_path}"]
    procs = [
        subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()[-2000:]
    folders = sorted((tmp_path / "train" / "runs").iterdir())
    assert len(folders) == 2
    # Started together, the two names share their time stamp, or miss it by a loaded second.
    started = [datetime.strptime(f.name[:19], "%Y-%m-%d_%H-%M-%S") for f in folders]
    assert abs((started[1] - started[0]).total_seconds()) <= 2
    for folder in folders:
        assert json.loads((folder / "result.json").read_text())["status"] == "ok"


def test_resume_continues_in_the_folder_named_after_a_move(make_cfg, tmp_path: Path) -> None:
    first = make_cfg(*ONE_EPOCH)
    run(first)
    moved = tmp_path / "moved"
    shutil.move(first.paths.output_dir, moved)
    resumed = resume_config(make_cfg(f"resume={moved}"), ["trainer.max_epochs=2"])
    assert resumed.paths.output_dir == str(moved.resolve())
    assert resumed.callbacks.model_checkpoint.dirpath == str(moved.resolve() / "checkpoints")
    run(resumed)
    assert not Path(first.paths.output_dir).exists()  # the old place is not re-created
    ckpt = torch.load(moved / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] == 1


def test_resume_cli_writes_its_log_into_the_run_and_no_new_folder(tmp_path: Path) -> None:
    logs = tmp_path / "outputs"
    first = run_script("train.py", *tiny_overrides(), *ONE_EPOCH, f"paths.log_dir={logs}")
    assert first.returncode == 0, first.stderr[-2000:]
    (run_dir,) = (logs / "train" / "runs").iterdir()
    result = run_script(
        "train.py", f"resume={run_dir}", "trainer.max_epochs=2", f"paths.log_dir={logs}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert [p.name for p in (logs / "train" / "runs").iterdir()] == [run_dir.name]
    assert list((run_dir / ".hydra").glob("resumed_*/overrides.yaml"))  # the resume's own
    assert "resume=" not in (run_dir / ".hydra" / "overrides.yaml").read_text()  # kept


def test_resume_refuses_a_read_only_checkpoints_folder(make_cfg, tmp_path: Path, monkeypatch):
    first = make_cfg(*ONE_EPOCH)
    run(first)
    # Root may write anywhere, so the refusal is simulated where the probe writes.
    from genlab.resume import run_dir as run_dir_module

    real = run_dir_module.check_writable
    blocked = Path(first.paths.output_dir) / "checkpoints"
    monkeypatch.setattr(
        "genlab.resume.command.check_writable",
        lambda d: "Read-only file system" if Path(d) == blocked else real(d),
    )
    with pytest.raises(ConfigError, match=r"cannot write .*checkpoints \(Read-only"):
        resume_config(make_cfg(f"resume={first.paths.output_dir}"), [])


def test_relocate_moves_only_paths_under_the_old_run() -> None:
    stored = {"a": "/old/run/checkpoints", "b": ["/old/run"], "c": "/old/runner", "d": 3}
    assert relocate(stored, "/old/run", "/new") == {
        "a": "/new/checkpoints", "b": ["/new"], "c": "/old/runner", "d": 3,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.optimizer.lr=-1", r"model.optimizer.lr=-1 must be > 0"),
        ("model.optimizer.betas=[0.5,1.5]", r"betas=\[0.5, 1.5\] must be in \[0, 1\)"),
        ("data.batch_size=0", r"data.batch_size=0 must be >= 1"),
        ("model.latent_dim=0", r"model.latent_dim=0 must be >= 1"),
        ("model.generator.width=0", r"model.generator.width=0 must be >= 1"),
        ("model.ema_decay=1.0", r"model.ema_decay=1.0 must be in \(0, 1\)"),
        ("model.label_smoothing=1", r"label_smoothing=1 must be in \[0, 1\)"),
        ("trainer.max_epochs=0", r"trainer.max_epochs=0: train at least one epoch"),
        ("seed=abc", r"seed='abc' \(str\): needs an integer from 0 to 4294967295"),
        ("checkpoint_every_n_batches=0", r"checkpoint_every_n_batches=0 .*needs an integer >= 1"),
    ],
)
def test_values_are_checked_before_any_data(make_cfg, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(make_cfg(override))


def test_a_schedule_sized_by_epochs_needs_an_epoch_count(make_cfg) -> None:
    """gan_mnist's cosine decay follows max_epochs: -1 (no limit) gives it no length."""
    with pytest.raises(ConfigError, match=r"model.scheduler.T_max=-1 must be >= 1"):
        validate(make_cfg("experiment=gan_mnist", "trainer.max_epochs=-1"))


@pytest.mark.parametrize(
    ("override", "message"),
    [("model=vae", "model.beta=-1 must be >= 0"), ("model=vaegan", "model.gamma=-1 must be")],
)
def test_model_specific_values_are_checked(make_cfg, override: str, message: str) -> None:
    key = "model.beta=-1" if "beta" in message else "model.gamma=-1"
    with pytest.raises(ConfigError, match=message):
        validate(make_cfg(override, key))


def test_library_mistakes_become_one_line_and_bugs_keep_their_traceback() -> None:
    from hydra.errors import InstantiationException
    from PIL.Image import DecompressionBombError
    from pytorch_lightning.utilities.exceptions import MisconfigurationException

    full = OSError(errno.ENOSPC, "No space left on device", "/runs/x/checkpoints/last.ckpt")
    assert user_error(full) == (
        "cannot write /runs/x/checkpoints/last.ckpt: the disk is full: free space there."
    )
    read_only = OSError(errno.EROFS, "Read-only file system", "/ro/x")
    assert "read-only" in user_error(read_only)
    assert "Lightning refused the settings" in user_error(MisconfigurationException("bad"))
    assert "shrink that image" in user_error(DecompressionBombError("Image size 4e8 pixels"))
    located = InstantiationException("Error locating target 'a.B', set env var ...")
    assert "Error locating target 'a.B'" in user_error(located)
    refused = InstantiationException("Error in call to target 'torch.optim.Adam':\nValueError")
    refused.__cause__ = ValueError("Invalid learning rate: -1")
    assert user_error(refused).startswith("Error in call to target 'torch.optim.Adam'")
    # Bugs: no translation, the traceback stays.
    bug = InstantiationException("Error in call to target 'x.Y'")
    bug.__cause__ = KeyError("internal")
    for err in (bug, KeyError("x"), AttributeError("x"), OSError(errno.EIO, "I/O error", "/x")):
        assert user_error(err) is None


class _Answer(BaseHTTPRequestHandler):
    status, body = 404, b"<html>not W&B</html>"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(self.status)
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def fake_server(monkeypatch: pytest.MonkeyPatch):
    """A local HTTP server posing as WANDB_BASE_URL; its answer is set per test."""
    server = HTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    yield _Answer
    server.shutdown()
    _Answer.status, _Answer.body = 404, b"<html>not W&B</html>"


def test_wandb_server_that_is_not_wandb_or_rejects_the_key(fake_server) -> None:
    cfg = OmegaConf.create({"mode": "online"})
    assert "not as a W&B server" in wandb_offline_reason(cfg)
    fake_server.status = 401
    assert "rejects the API key (HTTP 401)" in wandb_offline_reason(cfg)
    fake_server.status, fake_server.body = 200, b'{"data": {"viewer": null}}'
    assert "does not know this API key" in wandb_offline_reason(cfg)
    fake_server.body = b'{"data": {"viewer": {"id": "VXNlcjox"}}}'
    assert wandb_offline_reason(cfg) is None  # a W&B server that knows the key: stay online
    fake_server.status, fake_server.body = 404, b"x"
    logger = OmegaConf.create({"wandb": {"mode": "online", "save_dir": "/tmp"}})
    assert offline_overrides(logger.wandb) == {"mode": "offline"}
    assert logger.wandb.mode == "online"  # the config asked for is not changed


def test_a_run_against_a_wrong_wandb_server_finishes_offline(
    make_cfg, fake_server, monkeypatch
) -> None:
    monkeypatch.delenv("WANDB_MODE")  # the suite forces offline; this run asks for online
    cfg = make_cfg("logger=wandb", "logger.wandb.mode=online", *ONE_EPOCH)
    start = time.perf_counter()
    run(cfg)
    assert time.perf_counter() - start < 120
    assert list((Path(cfg.paths.output_dir) / "wandb").glob("offline-run-*"))


def test_a_checkpoint_must_fit_the_model_before_any_data(make_cfg) -> None:
    from genlab.errors import CheckpointError

    first = make_cfg(*ONE_EPOCH)
    run(first)
    ckpt = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    with pytest.raises(CheckpointError, match=r"holds other weights .*another model"):
        run(make_cfg("model=vae", f"ckpt_path={ckpt}", *ONE_EPOCH))
    with pytest.raises(CheckpointError, match=r"weights of other shapes .*generator"):
        run(make_cfg("model.generator.width=16", f"ckpt_path={ckpt}", *ONE_EPOCH))
    # A resume cannot change what the nets were built from (the stored config is resolved).
    with pytest.raises(ConfigError, match=r"model.latent_dim=32: the run built model.generator"):
        resume_config(make_cfg(f"resume={first.paths.output_dir}"), ["model.latent_dim=32"])
    resume_config(make_cfg(f"resume={first.paths.output_dir}"), ["model.optimizer.lr=1e-4"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "+model.scheduler={_target_:torch.optim.lr_scheduler.StepLR,_partial_:true}",
            r"model.scheduler \(torch.optim.lr_scheduler.StepLR\) needs step_size",
        ),
        ("data.val_size=0", r"data.val_size=0 must be >= 1"),
    ],
)
def test_incomplete_or_empty_settings_are_refused(make_cfg, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(make_cfg(override))

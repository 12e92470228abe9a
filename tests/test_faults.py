"""Faults lose nothing: a small /tmp, a full or read-only disk, a kill mid-write, a crash between
checkpoints. Each fault is injected (a monkeypatched write, a tempdir that cannot be used, a
real SIGKILL) and the test checks what the user is left with."""

from __future__ import annotations

import csv
import errno
import io
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

import genlab.checkpoints.io as checkpoint_module
from genlab.checkpoints.io import AtomicCheckpointIO
from genlab.checkpoints.keys import STEP_KEY
from genlab.checkpoints.load import read_checkpoint
from genlab.config.cli import exit_on_user_error
from genlab.errors import CheckpointError
from genlab.loggers.metrics_csv import MetricsCheckpointSync, ResumableCSVLogger
from genlab.train import run
from genlab.utils import atomic
from genlab.utils.atomic import TEMP_NAME, atomic_path, clean_stale_temporaries, current_umask
from tests.conftest import ROOT, as_unprivileged


def _ckpt(step: int) -> dict[str, Any]:
    return {"step": step, "w": torch.full((1000,), float(step))}


def _dead_pid() -> int:
    """The pid of a process that has just exited (reused only after the pid space wraps)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# --- 1. no staging copy in the system temp folder ----------------------------------------------


@pytest.fixture
def unusable_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The system temp folder points where nothing can be created (as a full or tiny /tmp)."""
    missing = tmp_path / "no_such_tmp"
    monkeypatch.setenv("TMPDIR", str(missing))
    monkeypatch.setattr(tempfile, "tempdir", str(missing))
    return missing


def test_lightnings_own_writer_stages_in_the_temp_folder(unusable_tmp: Path, tmp_path: Path):
    # Why AtomicCheckpointIO writes the file itself: Lightning's local save goes through an
    # fsspec transaction that stages a full copy in the system temp folder. (If a Lightning
    # upgrade stops doing so, this test says the injection below no longer bites.)
    from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

    with pytest.raises(OSError):
        TorchCheckpointIO().save_checkpoint(_ckpt(1), tmp_path / "ckpts" / "last.ckpt")


def test_checkpoints_are_written_beside_the_target_only(unusable_tmp: Path, tmp_path: Path):
    path = tmp_path / "ckpts" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(_ckpt(1), path)
    AtomicCheckpointIO().save_checkpoint(_ckpt(2), path)  # replacing an existing one too
    assert torch.load(path, weights_only=True)["step"] == 2
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


def test_nothing_is_written_to_a_read_only_temp_folder(tmp_path: Path, monkeypatch) -> None:
    readonly = tmp_path / "tmp"
    readonly.mkdir()
    readonly.chmod(0o500)
    monkeypatch.setenv("TMPDIR", str(readonly))
    monkeypatch.setattr(tempfile, "tempdir", str(readonly))
    try:
        AtomicCheckpointIO().save_checkpoint(_ckpt(1), tmp_path / "out" / "last.ckpt")
        with atomic_path(tmp_path / "out" / "result.json") as tmp:
            tmp.write_text("{}")
        assert list(readonly.iterdir()) == []
    finally:
        readonly.chmod(0o700)
    assert read_checkpoint_step(tmp_path / "out" / "last.ckpt") == 1


def read_checkpoint_step(path: Path) -> int:
    return torch.load(path, weights_only=True)["step"]


# --- 2. a full disk, a read-only folder -------------------------------------------------------


class _FullDiskFile(io.FileIO):
    """A file on a disk that fills up after ``room`` bytes."""

    room = 3000
    errno_ = errno.ENOSPC

    def write(self, data) -> int:  # type: ignore[override]
        view = memoryview(data)
        if self.tell() + len(view) <= self.room:
            return super().write(view)
        super().write(view[: max(0, self.room - self.tell())])  # the partial file is real
        raise OSError(self.errno_, os.strerror(self.errno_))


def _full_disk_open(errno_: int):
    def fake_open(file, mode="r", *args, **kwargs):
        if "w" in mode and "b" in mode:
            f = _FullDiskFile(file, "w")
            f.errno_ = errno_
            return f
        return open(file, mode, *args, **kwargs)

    return fake_open


@pytest.mark.parametrize(
    ("code", "what"), [(errno.ENOSPC, "no space left"), (errno.EDQUOT, "disk quota")]
)
def test_full_disk_keeps_the_previous_checkpoint_and_says_how_much_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, what: str
) -> None:
    folder = tmp_path / "run" / "checkpoints"
    path = folder / "last.ckpt"
    io_ = AtomicCheckpointIO()
    io_.save_checkpoint(_ckpt(1), path)
    monkeypatch.setattr(checkpoint_module, "open", _full_disk_open(code), raising=False)
    with pytest.raises(CheckpointError) as err:
        io_.save_checkpoint(_ckpt(2), path)
    message = str(err.value)
    buffer = io.BytesIO()
    torch.save(_ckpt(2), buffer)
    size = f"{len(buffer.getvalue()) / 1000:.1f} kB"
    assert "\n" not in message
    assert f"cannot write checkpoint {path}" in message and what in message
    assert f"holding {folder}" in message and f"needs {size}" in message and "free)" in message
    assert f"resume={tmp_path / 'run'}" in message
    assert read_checkpoint_step(path) == 1  # the previous one, whole
    assert [p.name for p in folder.iterdir()] == ["last.ckpt"]  # the partial file is gone


def test_full_disk_writing_the_best_checkpoint_points_at_last_ckpt(tmp_path, monkeypatch) -> None:
    folder = tmp_path / "run" / "checkpoints"
    AtomicCheckpointIO().save_checkpoint(_ckpt(1), folder / "last.ckpt")
    monkeypatch.setattr(checkpoint_module, "open", _full_disk_open(errno.ENOSPC), raising=False)
    with pytest.raises(CheckpointError) as err:
        AtomicCheckpointIO().save_checkpoint(_ckpt(2), folder / "epoch002.ckpt")
    assert str(err.value).endswith(
        f"Its last.ckpt is intact: free space there, then resume with python train.py "
        f"resume={tmp_path / 'run'}."
    )
    assert [p.name for p in folder.iterdir()] == ["last.ckpt"]


def test_full_disk_reported_late_by_fsync(tmp_path: Path, monkeypatch) -> None:
    # Network and delayed-allocation file systems may accept every write and fail the flush.
    path = tmp_path / "last.ckpt"

    def fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    with pytest.raises(CheckpointError, match=r"no space left.*No last\.ckpt was written yet"):
        AtomicCheckpointIO().save_checkpoint(_ckpt(1), path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_read_only_checkpoint_folder_is_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    real_open = os.open

    def os_open(path, flags, mode=0o777, *args, **kwargs):
        if Path(path).parent == folder and flags & os.O_CREAT:
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    with pytest.raises(CheckpointError) as err:
        AtomicCheckpointIO().save_checkpoint(_ckpt(1), folder / "last.ckpt")
    assert "\n" not in str(err.value)
    assert f"the folder {folder} is not writable ({os.strerror(code)})" in str(err.value)


def test_real_read_only_folder(tmp_path: Path, unprivileged_dir: Path) -> None:
    # As root (CI) modes stop nothing: the write runs as an unprivileged user (conftest).
    AtomicCheckpointIO().save_checkpoint(_ckpt(1), tmp_path / "warm" / "last.ckpt")  # imports
    run_dir = unprivileged_dir / "run"

    def save_into_read_only_folder() -> None:
        run_dir.mkdir()
        run_dir.chmod(0o500)  # checkpoints/ cannot even be created
        AtomicCheckpointIO().save_checkpoint(_ckpt(1), run_dir / "checkpoints" / "last.ckpt")

    with pytest.raises(CheckpointError, match=f"the folder {run_dir / 'checkpoints'} is not"):
        as_unprivileged(save_into_read_only_folder)
    assert not (run_dir / "checkpoints").exists()


def test_other_write_errors_are_not_disguised(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(checkpoint_module, "open", _full_disk_open(errno.EIO), raising=False)
    with pytest.raises(OSError) as err:
        AtomicCheckpointIO().save_checkpoint(_ckpt(1), tmp_path / "last.ckpt")
    assert err.value.errno == errno.EIO and not isinstance(err.value, CheckpointError)


def test_remote_paths_keep_lightnings_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

    seen = []
    monkeypatch.setattr(
        TorchCheckpointIO, "save_checkpoint", lambda s, c, p, o=None: seen.append(p)
    )
    AtomicCheckpointIO().save_checkpoint(_ckpt(1), "s3://bucket/last.ckpt")
    assert seen == ["s3://bucket/last.ckpt"]


def test_disk_full_during_training_stops_with_one_line(make_cfg, tmp_path: Path, monkeypatch):
    """A real run: the 2nd periodic checkpoint hits a full disk. The user sees one line, the
    first checkpoint stays loadable, result.json says why."""
    cfg = make_cfg(
        "trainer.max_epochs=1",
        "++trainer.limit_train_batches=6",
        "++trainer.limit_val_batches=1",
        "checkpoint_every_n_batches=2",
        "test=false",
    )
    run_dir = Path(cfg.paths.output_dir)
    writes = []

    def open_filling_up(file, mode="r", *args, **kwargs):
        if mode == "wb":
            writes.append(file)
            if len(writes) == 2:  # the second checkpoint: the disk is full now
                return _full_disk_open(errno.ENOSPC)(file, mode)
        return open(file, mode, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module, "open", open_filling_up, raising=False)
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    with pytest.raises(SystemExit) as stop, exit_on_user_error():
        run(cfg)
    assert stop.value.code == 1
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"genlab: error: cannot write checkpoint {run_dir}/checkpoints/")
    assert "no space left" in lines[0] and "The previous last.ckpt is intact" in lines[0]
    ckpt = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")  # the first one, whole
    assert ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["processed"] == 2
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["last.ckpt"]
    result = (run_dir / "result.json").read_text()
    assert '"status": "failed"' in result and "CheckpointError: cannot write" in result


# --- 3. temporaries of a killed write ---------------------------------------------------------


def test_temporary_names_carry_the_writer_and_the_extension(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "samples_epoch=003.png") as tmp:
        match = TEMP_NAME.fullmatch(tmp.name)
        assert match and int(match["pid"]) == os.getpid()
        assert tmp.parent == tmp_path and tmp.name.startswith(".samples_epoch=003.tmp-")
        assert tmp.suffix == ".png"
        tmp.write_bytes(b"x")
    assert [p.name for p in tmp_path.iterdir()] == ["samples_epoch=003.png"]


def test_clean_stale_temporaries_removes_only_dead_writers_leftovers(tmp_path: Path) -> None:
    dead, alive, me = _dead_pid(), os.getppid(), os.getpid()
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    stale = [
        f".last.tmp-{dead}-0a1b2c3d.ckpt",
        f".epoch002.tmp-{dead}-ffffffff.ckpt",
        f".metrics.tmp-{me}-12345678.csv",  # our pid, but not being written: a past life's
        f".noext.tmp-{dead}-00000000",
    ]
    kept = [
        "last.ckpt",
        f".last.tmp-{alive}-0a1b2c3d.ckpt",  # a live writer
        f"last.tmp-{dead}-0a1b2c3d.ckpt",  # not hidden: not ours
        f".last.tmp-{dead}-0A1B2C3D.ckpt",  # not our hex
        f".last.tmp-{dead}-0a1b2c.ckpt",
        ".last.tmp-0-0a1b2c3d.ckpt",  # pid 0 is no writer
        ".last.ckpt",
        "notes.txt",
    ]
    for name in stale + kept:
        (folder / name).write_bytes(b"partial")
    (folder / f".dir.tmp-{dead}-0a1b2c3d").mkdir()  # not a file
    (folder / f".link.tmp-{dead}-0a1b2c3d.ckpt").symlink_to(folder / "last.ckpt")
    with atomic_path(folder / "result.json") as writing:  # our own write in progress
        removed = clean_stale_temporaries(folder, tmp_path / "missing")
        assert writing.is_file()
        writing.write_text("{}")
    assert sorted(p.name for p in removed) == sorted(stale)
    not_files = {f".dir.tmp-{dead}-0a1b2c3d", f".link.tmp-{dead}-0a1b2c3d.ckpt"}
    assert {p.name for p in folder.iterdir()} == {*kept, *not_files, "result.json"}


_KILLED_WRITER = """
import os, signal, sys
from genlab.utils.atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    with open(tmp, "wb") as f:
        f.write(b"half a checkpoint")
        f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_sigkill_mid_write_leaves_a_temporary_that_the_next_start_removes(tmp_path: Path):
    target = tmp_path / "checkpoints" / "last.ckpt"
    target.parent.mkdir()
    target.write_bytes(b"the previous checkpoint")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, str(target)], env=env, capture_output=True
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    (leftover,) = [p for p in target.parent.iterdir() if p != target]
    assert TEMP_NAME.fullmatch(leftover.name)
    assert clean_stale_temporaries(target.parent) == [leftover]
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]
    assert target.read_bytes() == b"the previous checkpoint"


# --- 4. permissions follow the umask ----------------------------------------------------------


@pytest.fixture
def umask():
    """Set the process umask for one test."""
    old = os.umask(0o022)

    def set_(mask: int) -> None:
        os.umask(mask)

    yield set_
    os.umask(old)


@pytest.mark.parametrize(
    ("mask", "mode"),
    [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664), (0o277, 0o400)],
    ids=["022", "077", "002", "277"],
)
def test_files_get_the_users_umask(tmp_path: Path, umask, mask: int, mode: int) -> None:
    from torchvision.utils import save_image

    umask(mask)
    writers = {
        "result.json": lambda p: p.write_text("{}"),
        "features.pt": lambda p: torch.save({"x": torch.ones(3)}, p),
        "samples.npy": lambda p: np.save(p, np.zeros(3)),
        "grid.png": lambda p: save_image(torch.zeros(1, 8, 8), p),
    }
    for name, write in writers.items():
        with atomic_path(tmp_path / name) as tmp:
            assert tmp.stat().st_mode & 0o777 == 0o600  # writable by its writer meanwhile
            write(tmp)
    AtomicCheckpointIO().save_checkpoint(_ckpt(1), tmp_path / "last.ckpt")
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()}
    assert modes == dict.fromkeys([*writers, "last.ckpt"], oct(mode))


def test_umask_is_read_without_proc_too(umask, monkeypatch: pytest.MonkeyPatch) -> None:
    umask(0o027)
    assert current_umask() == 0o027
    monkeypatch.setattr(atomic, "_PROC_STATUS", "/nonexistent/status")  # not Linux
    assert current_umask() == 0o027
    assert current_umask() == 0o027  # and it was put back


# --- 5. metrics.csv after a crash between checkpoints -----------------------------------------

COLUMNS = ["epoch", "step", "train/loss", "val/loss"]
TRAINER = SimpleNamespace(accumulate_grad_batches=1, callback_metrics={})  # what the callback reads


def _write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _read_metrics(path: Path) -> list[tuple[int, str]]:
    """(step, kind) per row: kind is "train" or "val" by the metrics logged, else "other"."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    kinds = []
    for r in rows:
        stages = {k.split("/")[0] for k, v in r.items() if v and k not in ("step", "epoch")}
        kind = "train" if "train" in stages else "val" if "val" in stages else "other"
        kinds.append((int(r["step"]), kind))
    return kinds


def _crashed_run_rows() -> list[dict[str, Any]]:
    """Epoch 0: steps 0-5 and its validation row at step 5; epoch 1: steps 6-9, then a crash
    (the last checkpoint was written after step 7)."""
    rows: list[dict[str, Any]] = [{"epoch": 0, "step": s, "train/loss": s} for s in range(6)]
    rows.append({"epoch": 0, "step": 5, "val/loss": 0.5})
    rows += [{"epoch": 1, "step": s, "train/loss": s} for s in range(6, 10)]
    return rows


def _steps(path: Path) -> list[int]:
    return [step for step, _ in _read_metrics(path)]


def test_resumed_run_drops_the_rows_of_the_batches_it_redoes(tmp_path: Path) -> None:
    _write_metrics(tmp_path / "metrics.csv", _crashed_run_rows())
    logger = ResumableCSVLogger(tmp_path, append=True)
    for step in (8, 9, 10, 11):  # the resumed run redoes 8 and 9
        logger.log_metrics({"epoch": 1, "train/loss": step + 0.25}, step=step)
    logger.log_metrics({"epoch": 1, "val/loss": 0.4}, step=11)
    logger.finalize("success")
    rows = _read_metrics(tmp_path / "metrics.csv")
    assert rows == [
        *[(s, "train") for s in range(6)],
        (5, "val"),
        *[(s, "train") for s in range(6, 12)],
        (11, "val"),
    ]
    with open(tmp_path / "metrics.csv", newline="") as f:
        redone = [r for r in csv.DictReader(f) if r["step"] == "8"]
    assert [r["train/loss"] for r in redone] == ["8.25"]  # the resumed run's value


def test_validation_row_of_the_checkpoints_last_step_stays(tmp_path: Path) -> None:
    # Checkpoint at the end of epoch 0 (after its validation row at step 5), crash in epoch 1:
    # the resumed run starts at step 6.
    _write_metrics(tmp_path / "metrics.csv", _crashed_run_rows())
    logger = ResumableCSVLogger(tmp_path, append=True)
    logger.log_metrics({"epoch": 1, "train/loss": 6.5}, step=6)
    logger.save()
    rows = _read_metrics(tmp_path / "metrics.csv")
    assert rows == [*[(s, "train") for s in range(6)], (5, "val"), (6, "train")]


def test_the_checkpoints_step_decides_when_recorded(tmp_path: Path) -> None:
    # Rows every 4 steps (3, 7, 11, ...) and a checkpoint at step 9: the resumed run logs first
    # at step 11, but the crashed run's row of step 10 is of a batch it trains again.
    rows: list[dict[str, Any]] = [{"step": s, "train/loss": s} for s in (3, 7, 10)]
    _write_metrics(tmp_path / "metrics.csv", rows)
    logger = ResumableCSVLogger(tmp_path, append=True)
    logger.continue_from_step(9)
    logger.log_metrics({"train/loss": 11.0}, step=11)
    logger.save()
    assert _steps(tmp_path / "metrics.csv") == [3, 7, 11]


def test_a_fresh_run_still_replaces_the_file(tmp_path: Path) -> None:
    _write_metrics(tmp_path / "metrics.csv", _crashed_run_rows())
    logger = ResumableCSVLogger(tmp_path)
    logger.log_metrics({"train/loss": 1.0}, step=0)
    logger.save()
    assert _read_metrics(tmp_path / "metrics.csv") == [(0, "train")]


def test_checkpoint_callback_records_the_step_and_flushes(tmp_path: Path) -> None:
    logger = ResumableCSVLogger(tmp_path)
    sync = MetricsCheckpointSync([logger])
    for step in range(3):
        sync.on_train_batch_start(TRAINER, None, None, step)  # type: ignore[arg-type]
        logger.log_metrics({"train/loss": float(step)}, step=step)
    logger.log_metrics({"lr": 0.1}, step=2)  # as a callback logs: no save() after it
    checkpoint: dict[str, Any] = {}
    sync.on_save_checkpoint(TRAINER, None, checkpoint)  # type: ignore[arg-type]
    assert checkpoint[STEP_KEY] == 3
    assert len(_read_metrics(tmp_path / "metrics.csv")) == 4  # on disk with the checkpoint

    for step in (3, 4):  # logged after the checkpoint, then the crash
        logger.log_metrics({"train/loss": float(step)}, step=step)
    logger.finalize("failed")

    resumed = ResumableCSVLogger(tmp_path, append=True)
    resumed_sync = MetricsCheckpointSync([resumed])
    resumed_sync.on_load_checkpoint(TRAINER, None, checkpoint)  # type: ignore[arg-type]
    # A resumed run that checkpoints before logging anything (log_every_n_steps > the
    # checkpoint interval) leaves the trimmed file behind, and counts on from the step.
    resumed_sync.on_train_batch_start(TRAINER, None, None, 3)  # type: ignore[arg-type]
    again: dict[str, Any] = {}
    resumed_sync.on_save_checkpoint(TRAINER, None, again)  # type: ignore[arg-type]
    assert again[STEP_KEY] == 4
    rows = _read_metrics(tmp_path / "metrics.csv")
    assert rows == [(0, "train"), (1, "train"), (2, "train"), (2, "other")]


def test_a_checkpoint_without_a_step_falls_back_to_the_first_logged_step(tmp_path) -> None:
    _write_metrics(tmp_path / "metrics.csv", _crashed_run_rows())
    logger = ResumableCSVLogger(tmp_path, append=True)
    sync = MetricsCheckpointSync([logger])
    sync.on_load_checkpoint(TRAINER, None, {})  # type: ignore[arg-type]  # written before it
    sync.on_train_batch_start(TRAINER, None, None, 2)  # type: ignore[arg-type]
    logger.log_metrics({"epoch": 1, "train/loss": 8.5}, step=8)
    later: dict[str, Any] = {}
    sync.on_save_checkpoint(TRAINER, None, later)  # type: ignore[arg-type]
    assert STEP_KEY not in later  # the count is unknown: no wrong step is recorded
    assert _steps(tmp_path / "metrics.csv")[-3:] == [6, 7, 8]


def test_accumulated_gradients_fall_back_too(tmp_path: Path) -> None:
    # Lightning then advances the logged step once per optimizer step, not once per batch.
    accumulating = SimpleNamespace(accumulate_grad_batches=4, callback_metrics={})
    logger = ResumableCSVLogger(tmp_path, append=True)
    sync = MetricsCheckpointSync([logger])
    checkpoint: dict[str, Any] = {}
    sync.on_save_checkpoint(accumulating, None, checkpoint)  # type: ignore[arg-type]
    assert STEP_KEY not in checkpoint
    sync.on_load_checkpoint(accumulating, None, {STEP_KEY: 12})  # type: ignore[arg-type]
    _write_metrics(tmp_path / "metrics.csv", _crashed_run_rows())
    logger.log_metrics({"epoch": 1, "train/loss": 9.5}, step=9)
    logger.save()
    assert _steps(tmp_path / "metrics.csv")[-2:] == [8, 9]


def test_checkpoint_before_the_first_row_keeps_no_row_of_the_crashed_run(tmp_path) -> None:
    _write_metrics(tmp_path / "metrics.csv", _crashed_run_rows())
    logger = ResumableCSVLogger(tmp_path, append=True)
    logger.continue_from_step(0)  # its checkpoint came before the first batch
    logger.flush()
    assert _read_metrics(tmp_path / "metrics.csv") == []
    logger.log_metrics({"train/loss": 0.5}, step=0)
    logger.save()
    assert _read_metrics(tmp_path / "metrics.csv") == [(0, "train")]


def test_a_fresh_run_checkpointing_before_its_first_row_writes_no_empty_file(tmp_path) -> None:
    logger = ResumableCSVLogger(tmp_path)
    logger.flush()
    assert not (tmp_path / "metrics.csv").exists()
    logger.log_metrics({"train/loss": 0.5}, step=0)
    logger.finalize("success")
    assert _read_metrics(tmp_path / "metrics.csv") == [(0, "train")]


def test_a_full_disk_at_the_failed_runs_last_flush_keeps_the_runs_own_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    logger = ResumableCSVLogger(tmp_path)
    logger.log_metrics({"train/loss": 1.0}, step=0)
    real_open = open

    def full(file, mode="r", *args, **kwargs):
        if "w" in mode or "a" in mode:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", full)
    logger.finalize("failed")  # Lightning calls this while the run's own error propagates
    monkeypatch.undo()
    assert "could not write" in caplog.text and "No space left" in caplog.text


def test_kill_between_checkpoints_then_resume_leaves_every_step_once(
    make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkpoints record their step (train.py installs MetricsCheckpointSync): the rows
    the crashed run logged after its last checkpoint are dropped exactly. A SIGKILL runs no
    cleanup, so the crashed run's logger is not finalized."""
    crashed = make_cfg(
        "trainer.max_epochs=3",
        "++trainer.limit_train_batches=6",
        "++trainer.limit_val_batches=1",
        "++trainer.log_every_n_steps=1",
        "test=false",
        "checkpoint_every_n_batches=2",
        "+callbacks.crash._target_=tests.fault_injection.CrashAt",
        "+callbacks.crash.epoch=1",
        "+callbacks.crash.batch=5",
    )
    run_dir = Path(crashed.paths.output_dir)
    with monkeypatch.context() as killed:
        killed.setattr(ResumableCSVLogger, "finalize", lambda self, status: None)
        with pytest.raises(RuntimeError, match="injected crash"):
            run(crashed)
    # Lightning writes each row out as it is logged: step 10 (batch 4 of epoch 1) reached the
    # file after the last checkpoint (after batch 3 of epoch 1, so at step 10).
    assert _read_metrics(run_dir / "metrics.csv")[-1] == (10, "train")
    assert read_checkpoint(run_dir / "checkpoints" / "last.ckpt")[STEP_KEY] == 10

    run(make_cfg(f"resume={run_dir}"))  # CrashAt fires only in the first life
    rows = _read_metrics(run_dir / "metrics.csv")
    assert [s for s, kind in rows if kind == "train"] == list(range(18))  # each step once
    assert [s for s, kind in rows if kind == "val"] == [5, 11, 17]

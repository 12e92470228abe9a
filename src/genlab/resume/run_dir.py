"""The run directory: checked writable before anything runs, owned by one live run at a time,
and told what code made it.

Next to Hydra's ``.hydra/`` (the composed config and the overrides), every run gets
``run_info.json``: the git commit (and whether the tree had uncommitted changes), the command,
Python/platform and the versions of the packages that decide the numbers.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from lightning_fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig

from genlab.errors import ConfigError, RunDirBusy
from genlab.utils.atomic import atomic_path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

PACKAGES = ("torch", "torchvision", "pytorch-lightning", "hydra-core", "torchmetrics", "wandb")


def _git(*args: str, cwd: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def run_info(repo: Path) -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    status = _git("status", "--porcelain", "--untracked-files=no", cwd=repo)
    return {
        "git_commit": _git("rev-parse", "HEAD", cwd=repo),
        "git_dirty": bool(status) if status is not None else None,
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
    }


def write_run_info(output_dir: str | Path, repo: str | Path) -> Path:
    """Write ``run_info.json``; a resumed run appends its own entry to ``resumes``."""
    path = Path(output_dir) / "run_info.json"
    info = run_info(Path(repo))
    if path.is_file():
        first = json.loads(path.read_text())
        first.setdefault("resumes", []).append(info)
        info = first
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(info, indent=2))
    return path


def check_writable(directory: str | Path) -> str | None:
    """None if files can be created in ``directory`` (made if missing), else the reason."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        return "it is a file, not a folder"  # mkdir's own word for it: "File exists"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # A probe of its own name: runs started together (a job array, a sweep's workers)
        # check the same folder, and a shared name let one delete the other's probe.
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".genlab_write_test_"):
            pass
    except NotADirectoryError:
        return "part of that path is a file, not a folder"
    except OSError as err:
        return err.strerror or str(err)
    return None


CACHE_ENV = "GENLAB_CACHE_DIR"  # conf/paths/default.yaml: paths.cache_dir's default


def check_cache_dir(cache_dir: str | Path | None) -> None:
    """``ConfigError`` unless the feature cache (``paths.cache_dir``) can be written: checked
    before any data is loaded, where it would otherwise fail after the first epoch. The line
    names ``GENLAB_CACHE_DIR`` when that variable chose the folder, else ``paths.cache_dir``."""
    if not cache_dir:
        return
    reason = check_writable(cache_dir)
    if reason is None:
        return
    if os.environ.get(CACHE_ENV) and Path(os.environ[CACHE_ENV]) == Path(cache_dir):
        raise ConfigError(
            f"{CACHE_ENV}={cache_dir}: cannot write the feature cache there ({reason}). Point "
            f"{CACHE_ENV} at a writable folder, or unset it to use the project's .cache/."
        )
    raise ConfigError(
        f"paths.cache_dir={cache_dir}: cannot write the feature cache there ({reason}). Set "
        "paths.cache_dir (or the GENLAB_CACHE_DIR variable) to a writable folder."
    )


# A run holds an exclusive lock on this file in its folder while it writes there; the file
# says who ({"pid", "host", "started"}). The kernel drops the lock when the process ends, even
# on SIGKILL, so a killed run's folder is free for ``resume=`` with no stale-lock guessing.
OWNER_FILE = ".genlab_owner.json"


def _lock(fd: int) -> bool:
    """Take the folder's lock without waiting; False if another process holds it."""
    if fcntl is None:  # no advisory locks on this platform: ownership is not enforced
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _busy_error(directory: Path) -> RunDirBusy:
    try:
        owner = json.loads((directory / OWNER_FILE).read_text())
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner["started"]))
        who = f"process {owner['pid']} on {owner['host']} (since {started})"
    except (OSError, ValueError, KeyError):
        who = "another run"
    return RunDirBusy(
        f"{directory} is in use by {who}: two runs writing one folder would mix their metrics "
        "and checkpoints. Wait for it to finish, or give this run another hydra.run.dir."
    )


def refuse_if_owned(directory: str | Path) -> None:
    """Raise ``RunDirBusy`` if a live run holds ``directory``."""
    path = Path(directory) / OWNER_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # no owner file: nobody ever ran here (or it cannot be read: nothing to say)
    try:
        if not _lock(fd):
            raise _busy_error(Path(directory))
    finally:
        os.close(fd)  # also releases the probe's lock


@contextmanager
def owned_run_dir(directory: str | Path) -> Iterator[None]:
    """Hold ``directory`` for this process while the block runs; ``RunDirBusy`` if a live
    run holds it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / OWNER_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _lock(fd):
            raise _busy_error(directory)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(me).encode())
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays as a record of the last owner


class CheckRunDir(Callback):
    """A Hydra callback: before Hydra creates the run (or sweep) directory, make sure it can,
    and that no live run is writing into it (Hydra would overwrite its .hydra/ files).

    Otherwise Hydra stops with a bare ``FileNotFoundError``/``PermissionError`` traceback.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        directory = config.hydra.run.dir
        if rank_zero_only.rank > 0:  # a DDP rank re-running the command: rank 0's folder
            return
        try:
            refuse_if_owned(directory)
        except RunDirBusy as err:
            print(f"genlab: error: {err}", file=sys.stderr)
            sys.exit(1)
        self._check(directory, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.sweep.dir, "hydra.sweep.dir")

    @staticmethod
    def _check(directory: str, key: str) -> None:
        reason = check_writable(directory)
        if reason is not None:
            print(
                f"genlab: error: cannot write the output directory {directory} ({reason}). "
                f"Point paths.log_dir (or {key}) at a writable folder, e.g. "
                f"paths.log_dir=$HOME/genlab-outputs.",
                file=sys.stderr,
            )
            sys.exit(1)

"""The run directory: checked writable before anything runs, and told what code made it.

Next to Hydra's ``.hydra/`` (the composed config and the overrides), every run gets
``run_info.json``: the git commit (and whether the tree had uncommitted changes), the command,
Python/platform and the versions of the packages that decide the numbers.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from genlab.utils.atomic import atomic_path

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
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".genlab_write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        return err.strerror or str(err)
    return None


class CheckRunDir(Callback):
    """A Hydra callback: before Hydra creates the run (or sweep) directory, make sure it can.

    Otherwise Hydra stops with a bare ``FileNotFoundError``/``PermissionError`` traceback.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.run.dir, "hydra.run.dir")

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

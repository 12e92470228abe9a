"""A file-size limit (``ulimit -f``, EFBIG) while a checkpoint is written: one line, the
previous ``last.ckpt`` kept."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

# Run in a child: the limit is per process, and the suite must not inherit it.
CHILD = """
import resource, sys, torch
from pathlib import Path
from genlab.errors import CheckpointError
from genlab.checkpoints.io import AtomicCheckpointIO

folder = Path(sys.argv[1])
hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, hard))  # Python ignores SIGXFSZ: EFBIG
try:
    AtomicCheckpointIO().save_checkpoint({"w": torch.zeros(100_000)}, folder / "last.ckpt")
except CheckpointError as err:
    print(err)
"""


def test_file_size_limit_while_checkpointing(tmp_path: Path) -> None:
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save({"w": torch.ones(3)}, folder / "last.ckpt")
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    line = result.stdout.strip()
    assert "\n" not in line and "exceed the size limit" in line and "ulimit -f" in line
    assert "The previous last.ckpt is intact" in line and "resume=" in line
    # The previous checkpoint is untouched and no temporary file is left beside it.
    assert [p.name for p in folder.iterdir()] == ["last.ckpt"]
    assert torch.load(folder / "last.ckpt", weights_only=True)["w"].sum() == 3


def test_resume_hints_are_one_shell_word(tmp_path: Path) -> None:
    """A run folder with a space: the printed command still pastes as one argument."""
    import errno
    import shlex

    from genlab.checkpoints.io import _write_failure

    folder = tmp_path / "my run" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "last.ckpt").write_bytes(b"")
    err = OSError(errno.ENOSPC, "No space left on device")
    line = _write_failure(folder / "epoch001.ckpt", 1000, err)
    command = line.split("then resume with ", 1)[1].rstrip(".")
    assert shlex.split(command)[-1] == f"resume={folder.parent}"

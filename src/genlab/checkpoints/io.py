"""Lightning's checkpoint writer made atomic, and its reader made weights-only.

``train.py`` installs ``AtomicCheckpointIO`` as the trainer's checkpoint plugin (unless the
config names its own ``trainer.plugins``).
"""

from __future__ import annotations

import errno
import io
import shlex
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from genlab.errors import CheckpointError
from genlab.utils.atomic import atomic_path

_NO_SPACE = {errno.ENOSPC: "no space left", errno.EDQUOT: "the disk quota is used up"}
_TOO_BIG = {errno.EFBIG}  # the process's file-size limit (ulimit -f) or the file system's
_NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made atomic for local files: a SIGKILL while ``last.ckpt``
    is being rewritten leaves the previous ``last.ckpt`` intact.

    The checkpoint goes through ``atomic_path`` (a temporary file beside the target, fsynced,
    renamed), never through the system temp folder as Lightning's own writer does (fsspec's
    local transactions stage a full copy there). A full disk or a read-only folder stops the
    run with one ``CheckpointError`` line; the partial file is removed.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        if "://" in str(path) or storage_options is not None:
            # Remote storage (s3://, gs://) keeps its own semantics; Lightning refuses
            # storage_options for local files itself.
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        # Serialised in memory first (as Lightning does): its size is then known for the
        # message, and a failure while pickling leaves no file at all.
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        data = buffer.getbuffer()
        try:
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                f.write(data)
        except OSError as err:
            if err.errno in _NO_SPACE or err.errno in _NOT_WRITABLE or err.errno in _TOO_BIG:
                raise CheckpointError(_write_failure(path, len(data), err)) from err
            raise

    def load_checkpoint(
        self, path: str | Path, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Lightning's resume and ``test(ckpt_path=...)`` read through here: always weights
        only, whatever Lightning or the environment default to (a checkpoint is data; genlab's
        hold tensors and plain values only)."""
        if "://" in str(path):
            return super().load_checkpoint(path, map_location=map_location)
        if not Path(path).is_file():
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        # Onto the CPU by default, as Lightning's own reader does: the strategy moves it.
        cpu = map_location if map_location is not None else (lambda storage, loc: storage)
        return torch.load(path, map_location=cpu, weights_only=True)


def _write_failure(path: Path, size: int, err: OSError) -> str:
    """One line: what failed, where, what to do."""
    folder = path.parent
    run_dir = folder.parent if folder.name == "checkpoints" else folder
    fix = "free space there" if err.errno in _NO_SPACE else "make the folder writable"
    if err.errno in _TOO_BIG:
        fix = "raise the file-size limit (ulimit -f) or write to another file system"
    if (folder / "last.ckpt").is_file():  # what resume= continues from
        kept = "The previous last.ckpt" if path.name == "last.ckpt" else "Its last.ckpt"
        then = f"{kept} is intact: {fix}, then resume with python train.py resume={shlex.quote(str(run_dir))}."
    elif err.errno in _NO_SPACE or err.errno in _TOO_BIG:
        then = f"No last.ckpt was written yet: {fix} and start the run again."
    else:
        then = "No last.ckpt was written yet: start the run again with paths.log_dir=<a "
        then += "writable folder>."
    if err.errno in _NO_SPACE:
        try:
            free = f", {_size(shutil.disk_usage(folder).free)} free"
        except OSError:
            free = ""
        what = f"{_NO_SPACE[err.errno]} on the disk holding {folder} (the checkpoint needs "
        what += f"{_size(size)}{free})"
    elif err.errno in _TOO_BIG:
        what = f"the file would exceed the size limit ({err.strerror}; it needs {_size(size)})"
    else:
        what = f"the folder {folder} is not writable ({err.strerror})"
    return f"cannot write checkpoint {path}: {what}. {then}"


def _size(n: int) -> str:
    value, unit = float(n), "bytes"
    for bigger in ("kB", "MB", "GB", "TB"):
        if value < 1000:
            break
        value, unit = value / 1000, bigger
    return f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"

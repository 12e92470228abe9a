"""Write files so that a kill mid-write never leaves a truncated one behind.

The file is written under a temporary name in the same folder, flushed to disk, then renamed
over the target in one step (``os.replace`` is atomic on POSIX and Windows): a reader, or a
resumed run, sees either the old complete file or the new complete file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; once the block succeeds it becomes ``path``.

    The temporary name keeps ``path``'s extension, so writers that pick a format from it
    (PIL, ``np.save``) behave as with the real name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:  # on disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

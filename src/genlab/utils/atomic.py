"""Write files so that a kill mid-write never leaves a truncated one behind.

The file is written under a temporary name in the same folder, flushed to disk, then renamed
over the target in one step (``os.replace`` is atomic on POSIX and Windows): a reader, or a
resumed run, sees either the old complete file or the new complete file. Nothing is staged in
the system temp folder, so a small ``/tmp`` never limits what can be written.

The temporary name is ``.<stem>.tmp-<pid>-<8 hex digits><suffix>`` (``last.ckpt`` ->
``.last.tmp-4242-1a2b3c4d.ckpt``): hidden, with the target's extension (writers that pick a
format from it, PIL and ``np.save``, behave as with the real name), and naming the process that
writes it, so that ``clean_stale_temporaries`` can tell the leftovers of a killed writer from a
write in progress.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

TEMP_NAME = re.compile(r"\.(?P<stem>.*)\.tmp-(?P<pid>[1-9][0-9]*)-[0-9a-f]{8}(\.[^.]+)?")
# Names of the temporaries this process is writing right now. Containers often give a job the
# same pid on every start, so a leftover carrying our own pid is stale unless it is listed here.
_WRITING: set[str] = set()
_PROC_STATUS = "/proc/self/status"
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def current_umask() -> int:
    """The process's umask.

    Linux reports it in /proc/self/status (read-only: no race). Elsewhere it can only be read by
    setting it and setting it back, which for that instant applies to every thread; 0o077 is
    set meanwhile, so a file another thread creates then is private rather than world-writable.
    """
    try:
        with open(_PROC_STATUS) as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass  # not Linux, or a kernel older than 4.7: no Umask line
    old = os.umask(0o077)
    os.umask(old)
    return old


def _create_temporary(path: Path) -> Path:
    # Private while being written, and writable by us whatever the umask (0o277 would make it
    # read-only, and writers reopen it by name): fchmod, unlike open's mode, ignores the umask.
    for _ in range(100):
        name = f".{path.stem[:100]}.tmp-{os.getpid()}-{secrets.token_hex(4)}{path.suffix}"
        try:
            fd = os.open(path.parent / name, _CREATE, 0o600)
        except FileExistsError:
            continue
        except OSError as err:  # a read-only folder, say: name the file asked for, not ours
            raise OSError(err.errno, err.strerror, str(path)) from err
        try:
            if hasattr(os, "fchmod"):  # POSIX; on Windows the mode only sets read-only
                os.fchmod(fd, 0o600)
        except OSError:
            pass  # a file system without permissions (FAT, some FUSE): nothing to fix
        finally:
            os.close(fd)
        _WRITING.add(name)
        return path.parent / name
    raise FileExistsError(f"no free temporary name for {path} after 100 tries")


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (a power cut after it must not bring back the old file)."""
    if os.name != "posix":  # Windows cannot open a folder to fsync it
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # a folder we may write but not list: the file itself is synced
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems (network, FUSE) refuse fsync on a folder: the data is synced
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; once the block succeeds it becomes ``path``.

    The file gets the permissions a plain ``open(path, "w")`` would give it (0o666 less the
    umask: 0o644 by default), not ``tempfile``'s private 0o600, so collaborators can read it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # on disk before the rename makes it visible
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        _WRITING.discard(tmp.name)
    _fsync_folder(path.parent)


def _writer_alive(pid: int, name: str) -> bool:
    if pid == os.getpid():
        return name in _WRITING
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, as another user's process
    except OverflowError:
        return False  # no such pid on this machine
    return True


def clean_stale_temporaries(*folders: str | Path) -> list[Path]:
    """Remove the temporaries that a killed ``atomic_path`` write left in ``folders`` (not
    recursive) and return them.

    Only names of the exact ``atomic_path`` form, and only those whose writing process is gone
    from this machine: a write in progress, in this process or another, is never touched. The
    pid is checked on this machine only, so a folder shared with a live writer on another
    machine (NFS) must not be cleaned. Leftovers of writes made before temporaries carried a pid
    are not recognised and stay.
    """
    if os.name != "posix":  # os.kill(pid, 0) would signal the process on Windows, not probe it
        return []
    removed = []
    for folder in folders:
        try:
            entries = sorted(Path(folder).iterdir())
        except FileNotFoundError:
            continue  # nothing was ever written there
        for entry in entries:
            match = TEMP_NAME.fullmatch(entry.name)
            if match is None or entry.is_symlink() or not entry.is_file():
                continue
            if _writer_alive(int(match["pid"]), entry.name):
                continue
            try:
                entry.unlink()
            except FileNotFoundError:
                continue  # removed meanwhile
            removed.append(entry)
    if removed:
        log.info(
            "removed %d temporary file(s) left by a killed write: %s",
            len(removed),
            ", ".join(str(p) for p in removed),
        )
    return removed


def move_aside(path: Path) -> Path | None:
    """Rename a broken derived file (a cache) to ``<name>.corrupt-<n>`` (the first free ``n``),
    so that it can still be inspected and a new one can take its place. ``None``: it was
    already gone (another process moved or replaced it first)."""
    for n in itertools.count(1):
        target = path.with_name(f"{path.name}.corrupt-{n}")
        if target.exists():
            continue
        try:
            path.rename(target)
        except FileNotFoundError:
            return None
        return target
    raise AssertionError("unreachable")  # itertools.count never ends

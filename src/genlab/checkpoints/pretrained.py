"""The shipped checkpoints of ``pretrained/``: found by name, checked against ``SHA256SUMS``.

    python sample.py ckpt_path=pretrained:dcgan_mnist            # by name
    python eval.py ckpt_path=pretrained/dcgan_mnist.ckpt         # by path: checked the same way

``pretrained:<name>`` is ``<project root>/pretrained/<name>.ckpt`` ($GENLAB_PRETRAINED_DIR
moves the folder). ``SHA256SUMS`` (``sha256sum`` format) lists every shipped checkpoint; a
file that does not match its line, or a name it does not list, is one ``CheckpointError`` line
naming the available checkpoints. ``scripts/export_pretrained.py`` writes a checkpoint and its
line (docs/pretrained.md).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from genlab.errors import CheckpointError
from genlab.utils.atomic import atomic_path
from genlab.utils.hashing import file_sha256 as sha256
from genlab.utils.paths import project_root

PREFIX = "pretrained:"
SUMS = "SHA256SUMS"
MAX_BYTES = 10_000_000  # 10 MB: a shipped checkpoint stays cheap to clone
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a file stem: no folders, no spaces
_LINE = re.compile(r"(?P<hash>[0-9a-f]{64}) [ *](?P<file>\S+)")


def pretrained_dir() -> Path:
    """``$GENLAB_PRETRAINED_DIR``, else ``<project root>/pretrained``."""
    return Path(os.environ.get("GENLAB_PRETRAINED_DIR") or Path(project_root()) / "pretrained")


def read_sums(folder: str | Path | None = None) -> dict[str, str]:
    """``{name: sha256}`` of the checkpoints ``SHA256SUMS`` lists ({} when there is none)."""
    path = Path(folder or pretrained_dir()) / SUMS
    if not path.is_file():
        return {}
    sums = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        match = _LINE.fullmatch(line.strip())
        if not match or not match["file"].endswith(".ckpt"):
            raise CheckpointError(
                f"{path}:{number} is not a line of sha256sum's format ('<64 hex digits>  "
                f"<name>.ckpt'): {line.strip()[:80]!r}. Rewrite it with "
                "scripts/export_pretrained.py, or restore it from git."
            )
        sums[match["file"].removesuffix(".ckpt")] = match["hash"]
    return sums


def write_sums(sums: dict[str, str], folder: str | Path | None = None) -> Path:
    """Write ``SHA256SUMS`` (sorted by file name; ``sha256sum -c SHA256SUMS`` checks it)."""
    path = Path(folder or pretrained_dir()) / SUMS
    text = "".join(f"{sums[name]}  {name}.ckpt\n" for name in sorted(sums))
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def _available(sums: dict[str, str]) -> str:
    if not sums:
        return "none is shipped yet (add one with scripts/export_pretrained.py, docs/pretrained.md)"
    return "available: " + ", ".join(f"{PREFIX}{name}" for name in sorted(sums))


def resolve_checkpoint(spec: str | Path) -> Path:
    """The file ``ckpt_path=spec`` names. ``pretrained:<name>`` is looked up in the pretrained
    folder; a path to a file of that folder is checked against ``SHA256SUMS`` too; any other
    path is returned as it is (its own checks come when it is read)."""
    text = str(spec)
    folder = pretrained_dir()
    if text.startswith(PREFIX):
        name = text[len(PREFIX) :]
        sums = read_sums(folder)
        if name not in sums:
            raise CheckpointError(
                f"ckpt_path={text}: no pretrained checkpoint named {name!r} in "
                f"{folder / SUMS}; {_available(sums)}."
            )
        path = folder / f"{name}.ckpt"
        _verify(path, name, sums)
        return path
    path = Path(text)
    if path.suffix == ".ckpt" and path.is_file():
        # By the name it is reached under and by the file it really is: a link to a shipped
        # checkpoint (or a shipped name that is a link) is checked like the file itself.
        sums = None
        for candidate in (path.absolute(), path.resolve()):
            if candidate.parent.resolve() == folder.resolve():
                sums = read_sums(folder) if sums is None else sums
                if candidate.stem in sums:
                    _verify(candidate, candidate.stem, sums)
    return path


def pretrained_hint(spec: str | Path) -> str:
    """For a ckpt_path that names no file: how to write it if it meant a shipped checkpoint."""
    text = str(spec)
    try:
        sums = read_sums()
    except CheckpointError:
        return ""
    name = Path(text).stem if text.endswith(".ckpt") else text
    if "/" not in text and name in sums:
        return f" For the shipped checkpoint write ckpt_path={PREFIX}{name}."
    return ""


def _verify(path: Path, name: str, sums: dict[str, str]) -> None:
    if not path.is_file():
        raise CheckpointError(
            f"pretrained checkpoint {name!r} is listed in {path.parent / SUMS} but {path} is "
            f"missing: restore it (git checkout -- {path.name} in that folder); {_available(sums)}."
        )
    actual = sha256(path)
    if actual != sums[name]:
        raise CheckpointError(
            f"pretrained checkpoint {path} does not match its SHA256 in {path.parent / SUMS} "
            f"(file {actual[:12]}..., listed {sums[name][:12]}...): it is corrupt or was changed; "
            "restore it from git or export it again with scripts/export_pretrained.py; "
            f"{_available(sums)}."
        )

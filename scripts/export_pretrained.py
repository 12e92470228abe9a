"""Ship a run's checkpoint as ``pretrained/<name>.ckpt``: weights and config only, <= 10 MB.

    python scripts/export_pretrained.py outputs/train/runs/<time>/checkpoints/last.ckpt dcgan_mnist
    python scripts/export_pretrained.py <ckpt> vae_mnist --minutes 46 \\
        --command "python train.py experiment=vae_mnist trainer.max_epochs=10" --machine "..."

Writes, in ``pretrained/`` (``--folder`` elsewhere):

- ``<name>.ckpt``: the run's weights (``state_dict``, EMA generator included), its stored config
  (what ``sample.py``/``eval.py`` rebuild the model from), its epoch/step and, for DP runs, the
  privacy budget spent. Optimizer states, loops, callback states and RNG states are dropped:
  sampling and scoring need none of them (so ``train.py ckpt_path=`` cannot resume from it).
- ``<name>.json``: provenance: the training command, its minutes and machine, the source
  checkpoint's epoch and step, the git commit and package versions of the run.
- ``SHA256SUMS``: rewritten, one ``sha256sum`` line per checkpoint, sorted.

The command and minutes are read from the run folder when the checkpoint is in one
(``run_info.json``: the command; ``result.json``: the wall time of a run never resumed);
otherwise pass ``--command``/``--minutes``. ``--machine`` defaults to this machine. The model
is rebuilt and sampled before anything is written: a checkpoint that cannot be loaded or
generates NaN is refused, as is one over 10 MB (one line, exit status 1). Then regenerate the
table of docs/results.md with ``python scripts/results_table.py <name>`` (docs/pretrained.md).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shlex
from pathlib import Path

import torch

from genlab.checkpoints.keys import CONFIG_KEY, PRETRAINED_KEY, PRIVACY_KEY
from genlab.checkpoints.load import load_model, read_checkpoint
from genlab.checkpoints.pretrained import (
    MAX_BYTES,
    NAME,
    PREFIX,
    pretrained_dir,
    read_sums,
    sha256,
    write_sums,
)
from genlab.config.cli import exit_on_user_error
from genlab.errors import CheckpointError, ConfigError
from genlab.metrics.sampling import draw
from genlab.utils.atomic import atomic_path

# What sampling and eval.py read (load_model: the config and state_dict), plus what says
# where the weights come from. Everything else of a training checkpoint is dropped.
KEEP = ("state_dict", CONFIG_KEY, "epoch", "global_step", "pytorch-lightning_version", PRIVACY_KEY)
ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    """This machine, as benchmarks/time_to_quality.py writes it (plus the GPU, when present)."""
    text = f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or 'cpu'}"
    if torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name(0)}"
    return text


def _run_dir(source: Path) -> Path:
    folder = source.resolve().parent
    return folder.parent if folder.name == "checkpoints" else folder


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def run_provenance(source: Path) -> dict:
    """What the run folder of ``source`` says: the command, minutes, commit, packages."""
    run_dir = _run_dir(source)
    info = _read_json(run_dir / "run_info.json")
    result = _read_json(run_dir / "result.json")
    found: dict = {"run_dir": str(run_dir)}
    argv = info.get("command") or []
    if argv and Path(argv[0]).name == "train.py":
        args = [a for a in argv[1:] if not a.startswith(("hydra.", "hydra/"))]
        found["command"] = shlex.join(["python", "train.py", *args])
    # result.json times the last segment only: a resumed run's total is not known.
    if "seconds" in result and not info.get("resumes"):
        found["minutes"] = round(result["seconds"] / 60, 1)
    for key in ("git_commit", "git_dirty", "packages"):
        if key in info:
            found[key] = info[key]
    return found


def slim_checkpoint(checkpoint: dict, name: str) -> dict:
    slim = {key: checkpoint[key] for key in KEEP if key in checkpoint}
    slim[PRETRAINED_KEY] = {"name": name}  # marks a slim export (genlab.checkpoints.keys)
    return slim


def _shown(path: Path) -> str:
    """``path`` relative to the project root when it is inside it (no home folders shipped)."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return path.name  # outside the project: its name only, no home folders shipped


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def export(
    source: str | Path,
    name: str,
    *,
    folder: str | Path | None = None,
    command: str | None = None,
    minutes: float | None = None,
    machine_name: str | None = None,
    max_bytes: int = MAX_BYTES,
) -> Path:
    """Write ``<folder>/<name>.ckpt``, ``<name>.json`` and ``SHA256SUMS``; return the .ckpt."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(
            f"name={name!r}: a pretrained checkpoint's name is a file stem of letters, digits, "
            "'_', '-' and '.' (e.g. dcgan_mnist)."
        )
    source = Path(source)
    checkpoint = read_checkpoint(source)  # a genlab checkpoint with its config, or one line
    model, _ = load_model(source)  # it rebuilds from its config on this code...
    draw(model, 16, seed=0, batch_size=16, source=str(source))  # ...and generates no NaN
    found = run_provenance(source)
    command = command or found.get("command")
    minutes = minutes if minutes is not None else found.get("minutes")
    if not command:
        raise ConfigError(
            f"{source}: no run_info.json of train.py beside it, so the training command is "
            'unknown: pass --command "python train.py ...".'
        )
    if not command.startswith("python train.py"):
        raise ConfigError(
            f"--command {command!r}: give the training command line as it was run, starting "
            "with 'python train.py' (the results table shows it, and the docs test composes it)."
        )
    if minutes is None:
        raise ConfigError(
            f"{source}: the training time is unknown (no result.json, or the run was resumed): "
            "pass --minutes M."
        )

    buffer = io.BytesIO()
    torch.save(slim_checkpoint(checkpoint, name), buffer)
    data = buffer.getvalue()
    if len(data) > max_bytes:
        weights = sum(t.numel() * t.element_size() for t in checkpoint["state_dict"].values())
        raise CheckpointError(
            f"{name}.ckpt would be {_size(len(data))} ({_size(weights)} of weights), over the "
            f"{_size(max_bytes)} limit of a shipped checkpoint: export a smaller model "
            "(narrower nets), or publish this one elsewhere."
        )

    folder = Path(folder) if folder is not None else pretrained_dir()
    folder.mkdir(parents=True, exist_ok=True)
    sums = read_sums(folder)  # before anything is written: a malformed file stops here
    path = folder / f"{name}.ckpt"
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    digest = sha256(path)
    provenance = {
        "name": name,
        "file": path.name,
        "sha256": digest,
        "bytes": len(data),
        "model": checkpoint[CONFIG_KEY].get("model", {}).get("_target_"),
        "training": {
            "command": command,
            "minutes": minutes,
            "machine": machine_name or machine(),
        },
        "source": {
            "checkpoint": _shown(source),
            "epoch": checkpoint.get("epoch"),
            "global_step": checkpoint.get("global_step"),
            **{k: found[k] for k in ("git_commit", "git_dirty", "packages") if k in found},
        },
        "load": f"ckpt_path={PREFIX}{name}",
    }
    with atomic_path(folder / f"{name}.json") as tmp:
        tmp.write_text(json.dumps(provenance, indent=2) + "\n")
    # Entries of checkpoints no longer in the folder go; the others keep their listed hash
    # (a changed file still fails its check: exporting one never blesses another).
    sums = {n: h for n, h in sums.items() if (folder / f"{n}.ckpt").is_file()}
    sums[name] = digest
    write_sums(sums, folder)
    return path


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a run's checkpoint (last.ckpt, best)")
    parser.add_argument("name", help="the name it is loaded by: ckpt_path=pretrained:<name>")
    parser.add_argument("--minutes", type=float, help="training wall time (default: the run's)")
    parser.add_argument("--command", help="the training command (default: the run's)")
    parser.add_argument("--machine", help="where it trained (default: this machine)")
    parser.add_argument("--folder", type=Path, help="default: <project root>/pretrained")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        path = export(
            args.checkpoint,
            args.name,
            folder=args.folder,
            command=args.command,
            minutes=args.minutes,
            machine_name=args.machine,
        )
    print(
        f"wrote {path} ({_size(path.stat().st_size)}), {path.with_suffix('.json').name}, SHA256SUMS"
    )
    print(f"load it with: python sample.py ckpt_path={PREFIX}{args.name}")
    print(f"score it and update docs/results.md: python scripts/results_table.py {args.name}")
    return path


if __name__ == "__main__":
    main()

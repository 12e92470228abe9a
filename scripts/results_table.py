"""Write the table of shipped checkpoints in docs/results.md from their own eval.py runs.

    python scripts/results_table.py                      # every checkpoint of pretrained/
    python scripts/results_table.py dcgan_mnist          # score (if needed) only that one
    python scripts/results_table.py --eval-arg nll_samples=100 vae_mnist   # a cheaper NLL
    python scripts/results_table.py --table-only         # rebuild from the cached scores

For each checkpoint listed in ``pretrained/SHA256SUMS`` (its hash checked):

1. ``python eval.py ckpt_path=pretrained/<name>.ckpt [--eval-arg ...]``, eval.py's defaults:
   10k samples vs the 10k test images (FID, KID, IS, precision/recall, class coverage) and the
   model's own metrics (the VAEs' importance-weighted NLL). Its ``metrics.json`` is kept as
   ``pretrained/<name>.eval.json``, keyed by the checkpoint's SHA256 and the eval arguments: a
   later call with the same file and arguments reuses it instead of scoring again.
2. a 10x10 grid of seeded samples, ``docs/figures/pretrained_<name>.png`` (what
   ``python sample.py ckpt_path=pretrained:<name> n=100 seed=0 device=cpu`` draws).
3. the table between ``<!-- results-table:start -->`` and ``<!-- results-table:end -->`` of
   docs/results.md (a "Pretrained checkpoints" section is appended if the markers are missing):
   name, training command, minutes, machine (from ``pretrained/<name>.json``), FID, KID,
   precision, recall, class KL, NLL, the grid and the command that reproduces the row.

Nothing in the table is typed by hand: edit a checkpoint's provenance by exporting it again
(scripts/export_pretrained.py), never in docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from genlab.checkpoints.pretrained import pretrained_dir, read_sums, resolve_checkpoint
from genlab.config.cli import exit_on_user_error
from genlab.errors import CheckpointError

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results.md"
FIGURES = ROOT / "docs" / "figures"
START, END = "<!-- results-table:start -->", "<!-- results-table:end -->"
SECTION = "## Pretrained checkpoints"
NONE = "\u2013"  # an en dash: the metric does not apply (a GAN's NLL)
GRID = {"n": 100, "seed": 0, "batch_size": 100, "device": "cpu"}  # 10x10, the same on any machine
HEADER = (
    "name", "training command", "minutes", "machine", "FID", "KID", "precision", "recall",
    "class KL", "NLL (nats)", "cond. acc", "intra-FID", "samples (seed 0)", "reproduce",
)  # fmt: skip
# (metrics.json key, digits); None: the model does not compute it
METRICS = (
    ("test/fid", 2), ("test/kid", 4), ("test/precision", 2), ("test/recall", 2),
    ("test/class_kl", 3), ("test/nll_nats", 1), ("test/cond_acc", 3), ("test/intra_fid", 2),
)  # fmt: skip


def ckpt_arg(name: str, folder: Path) -> str:
    """How the reproduce command names the file: relative to the repo root when it is there."""
    path = folder / f"{name}.ckpt"
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def eval_command(name: str, folder: Path, eval_args: list[str]) -> str:
    return " ".join(["python eval.py", f"ckpt_path={ckpt_arg(name, folder)}", *eval_args])


def cached_eval(name: str, folder: Path, digest: str, eval_args: list[str] | None) -> dict | None:
    """The cached scores of this exact file under these eval arguments (None: under any), or
    None."""
    path = folder / f"{name}.eval.json"
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if cached.get("sha256") != digest:
        return None
    if eval_args is not None and cached.get("eval_args") != eval_args:
        return None
    return cached


def evaluate(name: str, folder: Path, digest: str, eval_args: list[str]) -> dict:
    """Run eval.py on the checkpoint, as the reproduce command does; cache its metrics.json."""
    out = ROOT / "outputs" / "eval" / "pretrained" / f"{name}_{time.strftime('%Y%m%d_%H%M%S')}"
    command = [
        sys.executable, "eval.py", f"ckpt_path={ckpt_arg(name, folder)}", *eval_args,
        f"hydra.run.dir={out}", "extras.print_config=false",
    ]  # fmt: skip
    print(f"[{name}] {eval_command(name, folder, eval_args)}", flush=True)
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True)
    report = json.loads((out / "metrics.json").read_text())
    cached = {
        "sha256": digest,
        "eval_args": eval_args,
        "command": eval_command(name, folder, eval_args),
        "seconds": round(time.perf_counter() - start, 1),
        **report,  # ckpt_path, requested, features, num_samples, ..., metrics
    }
    (folder / f"{name}.eval.json").write_text(json.dumps(cached, indent=2) + "\n")
    return cached


def sample_grid(checkpoint: Path, out: Path) -> Path:
    """The 10x10 grid of seeded samples (sample.py's own code, on the CPU); a conditional
    model's has one row per class (``labels=all``, 10 per class)."""
    from genlab.checkpoints.load import load_model
    from genlab.metrics.sampling import num_classes
    from genlab.sample import run

    grid = dict(GRID)
    if num_classes(load_model(checkpoint, "cpu")[0]):
        grid.update(n=None, labels="all", per_class=10)
    return run(OmegaConf.create({"ckpt_path": str(checkpoint), "out": str(out), **grid}))


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|")


def row(name: str, provenance: dict, cached: dict, grid: str) -> str:
    training = provenance.get("training", {})
    metrics = cached.get("metrics", {})
    values = [
        NONE if metrics.get(key) is None else f"{metrics[key]:.{digits}f}"
        for key, digits in METRICS
    ]
    minutes = training.get("minutes")
    cells = [
        f"`{name}`",
        f"`{training.get('command', '?')}`",
        "?" if minutes is None else f"{minutes:g}",
        training.get("machine", "?"),
        *values,
        f"![{name}]({grid})",
        f"`{cached['command']}`",
    ]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def protocol(cached: list[dict]) -> str:
    """One line on how the rows were scored, from the eval outputs themselves."""
    if not cached:
        return ""
    first = cached[0]
    text = (
        f"Scored by `eval.py`: {first.get('num_samples', '?')} samples vs "
        f"{first.get('num_real', '?')} test images, `{first.get('features', '?')}` features"
    )
    nll = [c for c in cached if "nll_samples" in c]
    if nll:
        k = sorted({c["nll_samples"] for c in nll})
        images = sorted(
            {c.get("model_metrics_images") for c in nll if c.get("model_metrics_images")}
        )
        text += f"; NLL: importance-weighted bound with k={'/'.join(map(str, k))}"
        if images:
            text += f" on {'/'.join(map(str, images))} test images"
    return text + (
        f". NLL is {NONE} for models without a likelihood (GANs); conditional accuracy and "
        f"intra-class FID (docs/evaluation.md) are {NONE} for unconditional models, and their "
        "grids have one row per class."
    )


def render(rows: list[str], cached: list[dict], missing: list[str]) -> str:
    lines = [
        "<!-- Generated by scripts/results_table.py from pretrained/*.json and *.eval.json: "
        "do not edit by hand. -->",
        "",
    ]
    if not rows:
        lines.append(
            "No checkpoint is shipped yet: export one (docs/pretrained.md), then run "
            "`python scripts/results_table.py`."
        )
    else:
        lines += [protocol(cached), ""]
        lines += ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER), *rows]
    if missing:
        lines += ["", f"Not scored yet: {', '.join(missing)}."]
    return "\n".join(lines)


def write_table(text: str, results: Path = RESULTS) -> None:
    """Replace what lies between the markers (a new section at the end when there are none)."""
    doc = results.read_text()
    block = f"{START}\n{text}\n{END}"
    if START in doc and END in doc:
        head, rest = doc.split(START, 1)
        tail = rest.split(END, 1)[1]
        doc = head + block + tail
    else:
        doc = doc.rstrip("\n") + f"\n\n{SECTION}\n\n{block}\n"
    results.write_text(doc)


def build(
    names: list[str] | None = None,
    *,
    folder: Path | None = None,
    eval_args: list[str] | None = None,
    table_only: bool = False,
    results: Path = RESULTS,
    figures: Path = FIGURES,
) -> str:
    """Score (where needed) and draw ``names`` (default: every listed checkpoint); write the
    table of every listed checkpoint with scores for these eval arguments. Returns the table."""
    folder = Path(folder) if folder is not None else pretrained_dir()
    eval_args = list(eval_args or [])
    sums = read_sums(folder)
    unlisted = sorted(p.stem for p in folder.glob("*.ckpt") if p.stem not in sums)
    if unlisted:
        raise CheckpointError(
            f"{folder} holds checkpoints SHA256SUMS does not list: {unlisted}. Export them with "
            "scripts/export_pretrained.py (which lists them), or remove them."
        )
    unknown = sorted(set(names or []) - set(sums))
    if unknown:
        raise CheckpointError(
            f"no pretrained checkpoint named {unknown} in {folder}; available: {sorted(sums)}."
        )
    todo = set(sums) if names is None else set(names)
    rows, scored, missing = [], [], []
    for name in sorted(sums):
        path = resolve_checkpoint(folder / f"{name}.ckpt")  # its SHA256 checked
        grid = figures / f"pretrained_{name}.png"
        # A checkpoint scored now must match this call's eval arguments; the others keep the
        # scores they were last made with (each row shows its own reproduce command).
        scoring = name in todo and not table_only
        cached = cached_eval(name, folder, sums[name], eval_args if scoring else None)
        if scoring:
            if cached is None:
                cached = evaluate(name, folder, sums[name], eval_args)
            else:
                print(f"[{name}] scores cached for this file ({name}.eval.json): reused")
            sample_grid(path, grid)
        if cached is None or not grid.is_file():
            missing.append(name)
            continue
        provenance = json.loads((folder / f"{name}.json").read_text())
        rows.append(row(name, provenance, cached, _link(grid, results.parent)))
        scored.append(cached)
    text = render(rows, scored, missing)
    write_table(text, results)
    return text


def _link(path: Path, folder: Path) -> str:
    """``path`` as a Markdown link from a page in ``folder``."""
    try:
        return str(path.resolve().relative_to(folder.resolve()))
    except ValueError:
        return str(path.resolve())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="checkpoints to score (default: all)")
    parser.add_argument("--eval-arg", dest="eval_args", action="append", default=[],
                        help="an eval.py override, e.g. nll_samples=100 (in the reproduce "
                        "command too)")  # fmt: skip
    parser.add_argument("--table-only", action="store_true", help="no eval.py, no grids")
    parser.add_argument("--folder", type=Path, help="default: <project root>/pretrained")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        text = build(
            args.names or None,
            folder=args.folder,
            eval_args=args.eval_args,
            table_only=args.table_only,
        )
    print(text)
    print(f"wrote the table into {RESULTS}")


if __name__ == "__main__":
    main()

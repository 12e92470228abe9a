"""``python -m genlab.sweeps summarize DIR``: a multirun (or Optuna study) as a table and plots."""

from __future__ import annotations

import argparse
from pathlib import Path

from genlab.config.cli import exit_on_user_error
from genlab.errors import DataError
from genlab.sweeps.summary import __doc__ as SUMMARY_DOC
from genlab.sweeps.summary import summarize


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m genlab.sweeps", description=SUMMARY_DOC)
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("summarize", help="table + plots of a multirun directory")
    cmd.add_argument("sweep_dir", type=Path)
    cmd.add_argument(
        "--metric", action="append", help="key to plot, e.g. test/fid (repeatable; default: "
        "the model's monitor)",
    )  # fmt: skip
    cmd.add_argument("--x", help="plot against this override only, e.g. data.train_fraction")
    args = parser.parse_args(argv)
    with exit_on_user_error():  # the same boundary as every entry point
        try:
            summary = summarize(args.sweep_dir, args.metric, args.x)
        except FileNotFoundError as err:
            raise DataError(str(err)) from None
    print(summary["markdown"])
    for path in summary["plots"]:
        print(f"plot: {path}")
    finite = [j for j in summary["jobs"] if j.status == "ok"]
    print(f"{len(finite)}/{len(summary['jobs'])} jobs finished; summary.csv, summary.md written.")


if __name__ == "__main__":
    main()

"""Lines of Python per package of ``src/genlab``: how the code is spread over responsibilities.

    python scripts/package_sizes.py                  # this checkout
    python scripts/package_sizes.py /tmp/old/src/genlab   # any other tree, e.g. a git archive

Each sub-package counts all its files (nested ones included); the modules directly under
``genlab/`` (the tasks, ``errors.py``, ``resolvers.py``) are one row, ``(top level)``. "code"
leaves out blank lines and comment lines (docstrings stay): what a reader scrolls through, not
a complexity measure.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

TOP = "(top level)"


def package_sizes(root: Path) -> dict[str, tuple[int, int, int]]:
    """package -> (files, lines, non-blank non-comment lines), largest first."""
    sizes: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        package = parts[0] if len(parts) > 1 else TOP
        lines = path.read_text().splitlines()
        code = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
        entry = sizes[package]
        entry[0] += 1
        entry[1] += len(lines)
        entry[2] += len(code)
    ordered = sorted(sizes.items(), key=lambda item: -item[1][1])
    return {name: (files, lines, code) for name, (files, lines, code) in ordered}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[1] / "src" / "genlab"
    parser.add_argument("root", nargs="?", type=Path, default=default)
    root = parser.parse_args().root
    if not root.is_dir():
        parser.error(f"{root} is not a folder: pass the path of a src/genlab tree")
    sizes = package_sizes(root)
    print(f"{'package':<14} {'files':>5} {'lines':>6} {'code':>6}")
    for name, (files, lines, code) in sizes.items():
        print(f"{name:<14} {files:>5} {lines:>6} {code:>6}")
    totals = [sum(values[i] for values in sizes.values()) for i in range(3)]
    print(f"{'total':<14} {totals[0]:>5} {totals[1]:>6} {totals[2]:>6}")


if __name__ == "__main__":
    main()

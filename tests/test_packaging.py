"""pyproject.toml is the one list of dependencies: requirements.txt only installs the project.

Static checks on the text of both files, no pip run: the whole file runs in well under a second.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The project itself, optionally editable and with extras: ".", "-e .", "-e .[dev]".
PROJECT_LINE = re.compile(r"(?:(?:-e|--editable)\s+)?\.(?:\[(?P<extras>[\w,\s-]*)\])?")


def _pyproject() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the backport, where installed
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirement_lines(text: str) -> list[str]:
    """The lines pip acts on: comments (``#`` at the start or after a space) and blanks gone."""
    lines = []
    for line in text.splitlines():
        line = re.sub(r"(^|\s)#.*", "", line).strip()
        if line:
            lines.append(line)
    return lines


def foreign_lines(text: str, extras: set[str]) -> list[str]:
    """Each line of a requirements file that installs anything but this project with some of
    its own ``extras``: a package, a pin, a URL, another requirements or constraints file."""
    found = []
    for line in requirement_lines(text):
        match = PROJECT_LINE.fullmatch(line)
        named = (
            {e.strip() for e in (match["extras"] or "").split(",") if e.strip()} if match else set()
        )
        if match is None or not named <= extras:
            found.append(line)
    return found


def test_requirements_txt_only_installs_the_project() -> None:
    project = _pyproject()["project"]
    extras = set(project.get("optional-dependencies", {}))
    text = (ROOT / "requirements.txt").read_text()
    assert requirement_lines(text), "requirements.txt installs nothing: it should install '.'"
    assert foreign_lines(text, extras) == [], (
        "requirements.txt names packages of its own: list dependencies in pyproject.toml "
        "(project.dependencies or an extra) and keep requirements.txt to '-e .[dev]'"
    )
    assert project["dependencies"], "pyproject.toml lists no dependencies"


@pytest.mark.parametrize(
    "text",
    [
        "-e .[dev]\ntorch>=2.4\n",  # a second list, beside the project
        "numpy\n",
        "-r other-requirements.txt\n",
        "-c constraints.txt\n-e .\n",
        "-e .[gpu]\n",  # an extra pyproject.toml does not define
        "-e git+https://example.org/genlab.git#egg=genlab\n",
        "./vendor/thing\n",
    ],
)
def test_the_requirements_check_flags_other_packages(text: str) -> None:
    assert foreign_lines(text, {"dev", "sweeps"}), text


@pytest.mark.parametrize(
    "text",
    ["-e .[dev]\n", "# comment\n\n.\n", "--editable .[dev, sweeps]  # both\n", "-e .\n"],
)
def test_the_requirements_check_allows_the_project(text: str) -> None:
    assert foreign_lines(text, {"dev", "sweeps"}) == []

"""The documentation cannot drift from the configs: every ``python train.py|eval.py|sample.py ...``
command written in README.md and docs/*.md composes with Hydra's compose API (no subprocesses:
the whole file takes seconds). Also: the README stays a short front page, image and page links
resolve, and the docs speak only of the project."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

import genlab  # noqa: F401  (registers the OmegaConf resolvers)
from tests.conftest import ROOT

README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_BYTES = 15_000

# Commands that are documented on purpose as mistakes: they must fail to compose.
MISTAKES = {
    "python train.py model=gna": "the 'unknown config option' example of troubleshooting.md",
}
# Commands this test cannot check, each with the reason. Keep this list short.
UNCHECKED = {
    "python train.py experiment=<model>_mnist trainer.max_epochs=5": (
        "<model> stands for a config group option (models.md, model zoo)"
    ),
}

COMMAND = re.compile(r"\bpython (train|eval|sample)\.py\b")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
INLINE = re.compile(r"(?<!`)`([^`]+)`(?!`)")
COMMENT = re.compile(r"(^|\s)#.*$")
SHELL_END = re.compile(r"\s(?:&&|\|\||;|\|)\s")
PLACEHOLDER = re.compile(r"<([^<>\n]+)>")
# Hydra flags that take no part in composition; the value says whether they take an argument.
FLAGS = {"-m": False, "--multirun": False, "--help": False, "-h": False, "--hydra-help": False}
FLAGS |= {"--info": False, "--resolve": False, "--cfg": True, "-c": True}
FLAGS |= {"--package": True, "-p": True}


@dataclass
class Command:
    text: str  # as written, with its line continuations joined
    where: list[str] = field(default_factory=list)  # "docs/page.md:line" of each occurrence

    @property
    def config_name(self) -> str:  # train.py -> conf/train.yaml, eval.py -> conf/eval.yaml, ...
        return COMMAND.search(self.text).group(1)


def _candidates(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every code-block line and inline code span of a Markdown file."""
    text = path.read_text()
    found: list[tuple[int, str]] = []
    prose = text
    for block in FENCE.finditer(text):
        start = text.count("\n", 0, block.start(1)) + 1
        lines = block.group(1).split("\n")
        i = 0
        while i < len(lines):
            line, first = lines[i], i
            while line.rstrip().endswith("\\") and i + 1 < len(lines):  # line continuations
                i += 1
                line = line.rstrip()[:-1] + " " + lines[i].strip()
            found.append((start + first, line))
            i += 1
        # blank the block out (keeping line numbers) so its backticks are not read as spans
        prose = prose[: block.start()] + re.sub(r"[^\n]", " ", block.group()) + prose[block.end() :]
    for span in INLINE.finditer(prose):  # a span may wrap over lines of a paragraph
        found.append((prose.count("\n", 0, span.start()) + 1, " ".join(span.group(1).split())))
    return found


def _commands() -> list[Command]:
    commands: dict[str, Command] = {}
    for path in DOCS:
        for line_no, text in _candidates(path):
            match = COMMAND.search(text)
            if not match:
                continue
            command = text[match.start() :]
            command = SHELL_END.split(command)[0]  # `... && python train.py` ends at the next &&
            command = COMMENT.sub("", command).strip()
            where = f"{path.relative_to(ROOT)}:{line_no}"
            commands.setdefault(command, Command(command)).where.append(where)
    return list(commands.values())


COMMANDS = _commands()


def _short(text: str, width: int = 90) -> str:
    text = text.removeprefix("python ")
    return text if len(text) <= width else text[: width - 3] + "..."


def _ids(commands: list[Command]) -> list[str]:
    ids: list[str] = []
    for command in commands:
        base = _short(command.text)
        ids.append(base if base not in ids else f"{base} #{ids.count(base) + 1}")
    return ids


def overrides_of(command: str) -> list[str]:
    """The overrides ``compose`` gets for a command line: placeholders become plain tokens,
    Hydra flags and ``hydra.*`` overrides are dropped, a sweep keeps its first value."""
    # <time>, <run dir>, <dcgan_mnist best>: quote-free tokens, as a user would fill in
    command = PLACEHOLDER.sub(lambda m: re.sub(r"\W+", "_", m.group(1)), command)
    tokens = shlex.split(command)[2:]  # after "python train.py"
    parser = OverridesParser.create()
    overrides: list[str] = []
    skip_next = False
    for token in tokens:
        if skip_next:
            skip_next = False
            continue
        if token == "...":  # `python train.py ...`: any overrides, i.e. none needed
            continue
        if token.startswith("-"):
            if token not in FLAGS:
                raise ValueError(f"unknown flag {token!r}: add it to FLAGS or UNCHECKED")
            skip_next = FLAGS[token]
            continue
        override = parser.parse_overrides([token])[0]
        if override.key_or_group.startswith("hydra."):  # run dirs, sweeper/launcher settings
            continue
        if override.is_sweep_override():  # a=1,2 / choice(...) / range(...): the first job
            first = next(iter(override.sweep_string_iterator()))
            token = f"{override.get_key_element()}={first}"
        overrides.append(token)
    return overrides


def test_commands_found() -> None:
    # guards the extractor: a broken regex would otherwise pass with nothing to check
    assert len(COMMANDS) >= 40, [c.text for c in COMMANDS]
    for text in [*MISTAKES, *UNCHECKED]:
        assert any(c.text == text for c in COMMANDS), f"{text!r} is no longer in the docs"


@pytest.mark.parametrize("command", COMMANDS, ids=_ids(COMMANDS))
def test_command_composes(command: Command, make_cfg: Callable[..., DictConfig]) -> None:
    if command.text in UNCHECKED:
        pytest.skip(UNCHECKED[command.text])
    overrides = overrides_of(command.text)
    if command.text in MISTAKES:
        with pytest.raises(Exception):  # noqa: B017  (Hydra raises several kinds)
            make_cfg(*overrides, config_name=command.config_name, tiny=False)
        return
    try:
        cfg = make_cfg(*overrides, config_name=command.config_name, tiny=False)
        OmegaConf.to_container(cfg, resolve=True)  # interpolations resolve too
    except Exception as err:
        pytest.fail(f"{command.text}\n  (in {', '.join(command.where)})\n  {err}")


def test_readme_is_a_front_page() -> None:
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes: move sections into docs/"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_speak_only_of_the_project(path: Path) -> None:
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        assert "session" not in line.lower(), f"{path.name}:{line_no}: {line}"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve(path: Path) -> None:
    text = FENCE.sub("", path.read_text())
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):  # web links, same-page anchors
            continue
        file = (path.parent / target.split("#")[0]).resolve()
        assert file.exists(), f"{path.name}: link to {target} does not resolve"

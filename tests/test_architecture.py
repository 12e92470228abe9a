"""The layering of docs/architecture.md, checked on the source: imports point down, src/ uses
only Lightning's public API, and the Lightning pin has an upper bound.

Static checks (AST and text), no training: the whole file runs in about a second.
"""

from __future__ import annotations

import ast
import re
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = SRC / "genlab"

# Top to bottom (docs/architecture.md, "Layers"). A module may import its own layer or lower.
# Each entry is a dotted prefix: "genlab.models" covers genlab.models and genlab.models.*.
# The most specific prefix wins (genlab.data.quality is a task, the rest of genlab.data is not).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("entry/glue", ("genlab", "genlab.resolvers")),
    (
        "tasks",
        (
            "genlab.train",
            "genlab.evaluate",
            "genlab.sample",
            "genlab.sweeps",
            "genlab.data.quality",
        ),
    ),
    ("callbacks/loggers/privacy", ("genlab.callbacks", "genlab.loggers", "genlab.privacy")),
    ("models", ("genlab.models",)),
    ("nets/metrics/data", ("genlab.nets", "genlab.metrics", "genlab.data")),
    # Exact resume: the data loader builds on its progress counting, so it sits below data.
    ("resume", ("genlab.resume",)),
    # Every custom checkpoint key, reading, the trust check of a stored config, pretrained/.
    ("checkpoints", ("genlab.checkpoints",)),
    # The vocabulary of value rules, instantiation, extras, did-you-mean.
    ("config", ("genlab.config",)),
    ("floor", ("genlab.utils", "genlab.errors")),
]

TASKS = LAYERS[1][1]

# Rules on top of the layer order (module prefix -> what it may not import, and why). Models ->
# data is allowed by the order alone, so this list is where it is forbidden.
EXTRA_RULES: list[tuple[str, tuple[str, ...], str]] = [
    ("genlab.metrics", (*TASKS, "genlab.models"), "metrics never import tasks or models"),
    (
        "genlab.models",
        ("genlab.callbacks", "genlab.data", *TASKS),
        "models never import callbacks, data or tasks",
    ),
]


def _matches(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_of(module: str) -> int | None:
    """Index into LAYERS (0 = top), by the longest matching prefix. ``genlab`` alone is the
    package __init__ only: a submodule nobody placed must not inherit the top layer."""
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            hit = module == prefix if prefix == "genlab" else _matches(module, prefix)
            if hit and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    return None if best is None else best[1]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(
    module: str, source: str, is_package: bool, known: set[str]
) -> list[tuple[str, int]]:
    """Every genlab module ``source`` imports, at any depth (module level, in functions, under
    ``if TYPE_CHECKING``), relative imports resolved, as (module, line).

    ``from pkg import name`` counts as importing ``pkg.name`` when that is a module of ours,
    else ``pkg`` itself."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join([*base_parts, node.module] if node.module else base_parts)
            else:
                base = node.module or ""
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.append((candidate if candidate in known else base, node.lineno))
    # One entry per (module, line): `from x import a, b` names x once.
    return list(dict.fromkeys((n, line) for n, line in found if _matches(n, "genlab")))


def layer_violations(
    module: str, source: str, is_package: bool, known: set[str]
) -> list[tuple[str, str, int, str]]:
    """(module, imported module, line, rule broken) for every import that breaks a rule."""
    own = layer_of(module)
    problems = []
    if own is None:
        problems.append((module, "-", 0, "module is in no layer: add it to LAYERS"))
    for target, line in imported_modules(module, source, is_package, known):
        if target == module:
            continue
        target_layer = layer_of(target)
        if target_layer is None:
            problems.append((module, target, line, "imported module is in no layer"))
            continue
        if own is not None and target_layer < own:
            problems.append(
                (
                    module,
                    target,
                    line,
                    f"{LAYERS[own][0]} imports up into {LAYERS[target_layer][0]}",
                )
            )
        if _matches(module, "genlab.utils") and not (
            _matches(target, "genlab.utils") or target == "genlab.errors"
        ):
            problems.append((module, target, line, "utils imports only utils and errors"))
        for prefix, forbidden, why in EXTRA_RULES:
            if _matches(module, prefix) and any(_matches(target, f) for f in forbidden):
                problems.append((module, target, line, why))
    return problems


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _known_modules() -> set[str]:
    return {module_name(p) for p in _sources()}


def test_the_checker_sees_the_tree() -> None:
    # A wrong root or glob would make the tests below pass on nothing.
    known = _known_modules()
    assert {"genlab", "genlab.train", "genlab.utils.atomic", "genlab.data.loader"} <= known
    assert len(known) > 40


def test_every_import_points_down() -> None:
    known = _known_modules()
    problems = []
    for path in _sources():
        name = module_name(path)
        is_package = path.name == "__init__.py"
        problems += layer_violations(name, path.read_text(), is_package, known)
    report = "\n".join(f"{m} imports {t} (line {line}): {why}" for m, t, line, why in problems)
    assert not problems, "imports that break docs/architecture.md's layers:\n" + report


@pytest.mark.parametrize(
    ("module", "is_package", "source", "expected"),
    [
        # A function-level import from the floor up into models.
        (
            "genlab.config.extras",
            False,
            "import os\n\ndef f():\n    from genlab.models.gan import GAN\n",
            [("genlab.models.gan", 4)],
        ),
        # A relative import, resolved: metrics -> models is forbidden twice (layer and rule).
        ("genlab.metrics.scores", False, "from ..models import gan\n", [("genlab.models.gan", 1)]),
        # `from genlab import train` names the task module, not the package.
        ("genlab.nets.conv", False, "from genlab import train\n", [("genlab.train", 1)]),
        # Models -> data: allowed by the layer order, forbidden by its own rule.
        ("genlab.models.vae", False, "import genlab.data.mnist\n", [("genlab.data.mnist", 1)]),
        # utils -> resume: one layer up.
        (
            "genlab.utils.atomic",
            False,
            "from genlab.resume import progress\n",
            [("genlab.resume.progress", 1)],
        ),
        # An __init__'s relative import resolves against the package itself.
        ("genlab.nets", True, "from .. import callbacks\n", [("genlab.callbacks", 1)]),
    ],
)
def test_the_checker_flags_a_violation(
    module: str, is_package: bool, source: str, expected: list[tuple[str, int]]
) -> None:
    found = layer_violations(module, source, is_package, _known_modules())
    assert found, "a synthetic violation went unnoticed"
    assert {(target, line) for _, target, line, _ in found} == set(expected), found


@pytest.mark.parametrize(
    ("module", "source"),
    [
        (
            "genlab.train",
            "from genlab.models.gan import GAN\nfrom genlab.errors import ConfigError\n",
        ),
        ("genlab.data.mnist", "from genlab.data.loader import ResumableLoader\n"),
        ("genlab.data.quality", "from genlab.data.image_folder import scan_folder\n"),
        ("genlab.models.gan", "from . import losses\nfrom genlab.nets.conv import ConvDecoder\n"),
        (
            "genlab.config.cli",
            "from genlab.errors import GenlabError\nimport genlab.utils.atomic\n",
        ),
    ],
)
def test_the_checker_allows_downward_imports(module: str, source: str) -> None:
    assert layer_violations(module, source, False, _known_modules()) == []


def test_an_unplaced_module_is_flagged() -> None:
    # A new top-level module must be given a layer, not slip past every rule.
    assert layer_of("genlab.newthing") is None
    assert layer_violations("genlab.newthing", "", False, set())


# --- Lightning's private API -------------------------------------------------------------------

PRIVATE_PATTERNS = (
    "fit_loop",
    "_logger_connector",
    "._trainer",
    "trainer._",
    "_check_log_dir_exists",
    "self._fs",
    "self._experiment",
    "_batches_that_stepped",
    "_combined_loader",
)
LIGHTNING_ROOTS = ("pytorch_lightning", "lightning_fabric", "lightning")


def _private_part(dotted: str) -> bool:
    return any(p.startswith("_") and not p.startswith("__") for p in dotted.split("."))


def private_lightning_uses(source: str) -> list[tuple[int, str]]:
    """(line, what) for each private-API pattern in the text (comments and strings included:
    a getattr(trainer, "fit_loop") is as private as trainer.fit_loop), each import of a private
    Lightning name or module, and each private attribute reached through a Lightning module
    alias (``pl.trainer.connectors._x``)."""
    found = []
    for number, text in enumerate(source.splitlines(), 1):
        found += [(number, pattern) for pattern in PRIVATE_PATTERNS if pattern in text]
    aliases = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in LIGHTNING_ROOTS:
                    if _private_part(alias.name):
                        found.append((node.lineno, f"import {alias.name}"))
                    aliases.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            if node.module.split(".")[0] not in LIGHTNING_ROOTS:
                continue
            if _private_part(node.module):
                found.append((node.lineno, f"from {node.module} import ..."))
            for alias in node.names:
                if _private_part(alias.name):
                    found.append((node.lineno, f"from {node.module} import {alias.name}"))
                elif not alias.name[:1].isupper():  # a submodule or function, e.g. `loggers`
                    aliases.add(alias.asname or alias.name)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and _private_part(node.attr):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in aliases:
                found.append((node.lineno, f"{root.id}....{node.attr}"))
    return found


def test_src_uses_no_private_lightning_api() -> None:
    hits = [
        f"{path.relative_to(ROOT)}:{line}: {what}"
        for path in _sources()
        for line, what in private_lightning_uses(path.read_text())
    ]
    assert not hits, "private Lightning API in src/ (breaks on a Lightning upgrade):\n" + "\n".join(
        hits
    )


@pytest.mark.parametrize(
    "source",
    [
        "def f(trainer):\n    return trainer.fit_loop.epoch_progress\n",
        "def f(trainer):\n    trainer._logger_connector.reset()\n",
        "def f(self):\n    return self._trainer\n",
        "x = getattr(trainer, '_combined_loader')\n",
        "from pytorch_lightning.trainer.connectors._x import y\n",
        "from pytorch_lightning.utilities import _version\n",
        "import lightning_fabric._private as lp\n",
        "import pytorch_lightning as pl\n\nv = pl.trainer._hidden\n",
    ],
)
def test_the_private_api_check_flags(source: str) -> None:
    assert private_lightning_uses(source), source


def test_the_private_api_check_allows_public_imports() -> None:
    source = (
        "import pytorch_lightning as pl\n"
        "from pytorch_lightning.callbacks import Callback\n"
        "from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO\n"
        "def f(trainer):\n    return trainer.current_epoch, pl.Trainer\n"
    )
    assert private_lightning_uses(source) == []


# --- the Lightning pin -------------------------------------------------------------------------


def test_pytorch_lightning_has_an_upper_bound() -> None:
    # Exact resume relies on Lightning's checkpoint and loader behaviour: a new minor release
    # must be tested before it is allowed in.
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the backport, where installed
        tomllib = pytest.importorskip("tomli")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    (lightning,) = [
        r for r in requirements if re.sub(r"[-_.]+", "-", r.name.lower()) == "pytorch-lightning"
    ]
    assert any(spec.operator == "<" for spec in lightning.specifier), str(lightning)
    # The installed (tested) version is inside the pinned range.
    installed = Version(metadata.version("pytorch-lightning"))
    assert lightning.specifier.contains(installed, prereleases=True), (str(lightning), installed)

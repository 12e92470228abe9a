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


def test_utils_imports_no_other_genlab_package() -> None:
    # utils/ is the floor any package may use: it takes nothing of genlab but errors, so it
    # can never pull a feature (or an import cycle) into whatever uses it.
    known = _known_modules()
    problems = [
        f"{module_name(path)} imports {target} (line {line})"
        for path in sorted((PACKAGE / "utils").rglob("*.py"))
        for target, line in imported_modules(
            module_name(path), path.read_text(), path.name == "__init__.py", known
        )
        if not (_matches(target, "genlab.utils") or target == "genlab.errors")
    ]
    assert not problems, "utils/ imports more than utils and errors:\n" + "\n".join(problems)


def test_the_utils_rule_flags_a_violation() -> None:
    source = "from genlab.errors import ConfigError\nfrom genlab.config import rules\n"
    found = layer_violations("genlab.utils.paths", source, False, _known_modules())
    assert [why for *_, why in found if "utils" in why] == ["utils imports only utils and errors"]


def _layout_picture() -> str:
    """The diagram of docs/architecture.md's Layout section (its first code block)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## Layout\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```\n", 2)[1]


def test_the_layout_picture_names_every_module() -> None:
    # docs/architecture.md draws every file of src/genlab in its layer: a new or moved file
    # shows up here until the picture follows it.
    picture = _layout_picture()
    drawn = set(re.findall(r"\b\w+\.py\b", picture))
    files = {p.name for p in _sources() if p.name != "__init__.py"}
    assert files - drawn == set(), "files of src/genlab missing from the Layout picture"
    entry_points = {p.name for p in ROOT.glob("*.py")} | {"__init__.py"}
    assert drawn - files - entry_points == set(), "the Layout picture names files that are gone"


def test_where_to_add_things_names_real_files() -> None:
    # The table of docs/architecture.md: each file it tells a newcomer to touch exists.
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = text.split("### Where to add things\n", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`((?:src|conf)/[\w./]+\.(?:py|yaml))`", table))
    assert named, "docs/architecture.md lost its table of where to add things"
    assert {n for n in named if not (ROOT / n).is_file()} == set()


# --- checkpoint keys live in genlab/checkpoints/ -----------------------------------------------

KEYS_MODULE = "genlab.checkpoints.keys"
CHECKPOINT_NAME = re.compile(r"checkpoint|ckpt", re.IGNORECASE)
# Lightning's hooks that hand over the checkpoint dict, whatever their parameter is called.
CHECKPOINT_HOOKS = ("on_save_checkpoint", "on_load_checkpoint")
KEY_METHODS = ("get", "pop", "setdefault", "__getitem__", "__setitem__", "__contains__")
# Calls that return a checkpoint dict: torch.load(...)["key"] reads a key too.
CHECKPOINT_READERS = ("load", "read_checkpoint", "load_checkpoint")
# Where code that could touch a checkpoint lives; tests may read entries to check them.
KEY_SCOPE = ("src/genlab", "scripts", "benchmarks", "my_models", "train.py", "eval.py", "sample.py")


def _key_scope_files() -> list[Path]:
    files = []
    for entry in KEY_SCOPE:
        path = ROOT / entry
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return [p for p in files if not p.is_relative_to(PACKAGE / "checkpoints")]


def _scope_module(path: Path) -> str:
    """Dotted name of a file of KEY_SCOPE: genlab.x.y, scripts.export_pretrained, train."""
    if path.is_relative_to(SRC):
        return module_name(path)
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def _key_imports(tree: ast.AST) -> tuple[dict[str, str], set[str], dict[str, str]]:
    """(local name -> constant of genlab.checkpoints.keys, local aliases of that module,
    local name -> module it is imported from, for every other ``from x import name``)."""
    constants: dict[str, str] = {}
    modules: set[str] = set()
    elsewhere: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                local = alias.asname or alias.name
                if node.module == KEYS_MODULE:
                    constants[local] = alias.name
                elif node.module == "genlab.checkpoints" and alias.name == "keys":
                    modules.add(local)
                else:
                    elsewhere[local] = node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == KEYS_MODULE and alias.asname:
                    modules.add(alias.asname)
    return constants, modules, elsewhere


def _module_strings(tree: ast.Module) -> dict[str, str]:
    """Module-level ``NAME = "text"`` constants."""
    found = {}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        value = getattr(node, "value", None)
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            found.update({t.id: value.value for t in targets if isinstance(t, ast.Name)})
    return found


def _is_checkpoint(node: ast.AST, hook_params: set[str]) -> bool:
    if isinstance(node, ast.Name):
        return bool(CHECKPOINT_NAME.search(node.id)) or node.id in hook_params
    if isinstance(node, ast.Attribute):
        return bool(CHECKPOINT_NAME.search(node.attr))
    if isinstance(node, ast.Call):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        return name in CHECKPOINT_READERS
    return False


def _accessed_key(node: ast.AST, hook_params: set[str]) -> ast.expr | None:
    """The key expression when ``node`` reads or writes a top-level entry of a checkpoint:
    ``ckpt[k]``, ``ckpt.get(k)`` (pop, setdefault), ``k in ckpt``."""
    if isinstance(node, ast.Subscript) and _is_checkpoint(node.value, hook_params):
        return node.slice
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in KEY_METHODS
        and node.args
        and _is_checkpoint(node.func.value, hook_params)
    ):
        return node.args[0]
    if (
        isinstance(node, ast.Compare)
        and len(node.ops) == 1
        and isinstance(node.ops[0], (ast.In, ast.NotIn))
        and _is_checkpoint(node.comparators[0], hook_params)
    ):
        return node.left
    return None


def checkpoint_key_problems(source: str) -> list[tuple[int, str]]:
    """(line, what) for each custom checkpoint key named outside genlab.checkpoints.keys:

    - a key of a checkpoint (a variable or attribute named ``*checkpoint*``/``*ckpt*``, the dict
      ``on_save_checkpoint``/``on_load_checkpoint`` receive, ``torch.load(...)``) given as a
      string literal other than Lightning's own entries, as a constant of the module itself, or
      as a name imported from anywhere but genlab.checkpoints.keys;
    - a string literal equal to a registered key (``"genlab_config"``), wherever it is used,
      unless the key is also a config group's name (``privacy``), which a literal cannot tell
      apart.
    """
    from genlab.checkpoints.keys import KEYS, LIGHTNING_KEYS

    tree = ast.parse(source)
    key_constants, _, elsewhere = _key_imports(tree)
    local = _module_strings(tree)
    groups = {p.name for p in (ROOT / "conf").iterdir() if p.is_dir()}
    found: list[tuple[int, str]] = []

    def judge(key: ast.expr) -> str | None:
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            return None if key.value in LIGHTNING_KEYS else f"literal key {key.value!r}"
        if isinstance(key, ast.Name) and key.id not in key_constants:
            if key.id in local:
                return f"key {key.id} = {local[key.id]!r} defined here"
            if key.id in elsewhere:
                return f"key {key.id} imported from {elsewhere[key.id]}"
        return None  # a registered constant, or a variable (a loop over keys)

    def visit(node: ast.AST, hook_params: set[str]) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            params = [*node.args.posonlyargs, *node.args.args]
            if node.name in CHECKPOINT_HOOKS and params:
                hook_params = hook_params | {params[-1].arg}
        key = _accessed_key(node, hook_params)
        problem = judge(key) if key is not None else None
        if problem:
            found.append((node.lineno, problem))
        if isinstance(node, ast.Constant) and node.value in KEYS and node.value not in groups:
            found.append((node.lineno, f"the registered key {node.value!r} as a literal"))
        for child in ast.iter_child_nodes(node):
            visit(child, hook_params)

    visit(tree, set())
    return sorted(set(found))


def checkpoint_key_writes(source: str) -> list[tuple[int, str]]:
    """(line, key) for each store under a constant of genlab.checkpoints.keys
    (``checkpoint[CONFIG_KEY] = ...``, ``x.setdefault(keys.STEP_KEY, ...)``), whatever dict
    it goes into: a registered constant is a checkpoint key wherever it is used."""
    from genlab.checkpoints import keys

    tree = ast.parse(source)
    key_constants, key_modules, _ = _key_imports(tree)

    def key_of(node: ast.expr) -> str | None:
        if isinstance(node, ast.Name) and node.id in key_constants:
            return getattr(keys, key_constants[node.id], None)
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in key_modules
        ):
            return getattr(keys, node.attr, None)
        return None

    found = []
    for node in ast.walk(tree):
        key = None
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store):
            key = key_of(node.slice)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "setdefault"
            and node.args
        ):
            key = key_of(node.args[0])
        if isinstance(key, str):
            found.append((node.lineno, key))
    return found


def test_checkpoint_keys_are_named_only_in_checkpoints() -> None:
    hits = [
        f"{path.relative_to(ROOT)}:{line}: {what}"
        for path in _key_scope_files()
        for line, what in checkpoint_key_problems(path.read_text())
    ]
    assert not hits, (
        "checkpoint keys named outside genlab/checkpoints/ (register the key in "
        "genlab/checkpoints/keys.py and use its constant):\n" + "\n".join(hits)
    )


def test_each_checkpoint_key_is_written_by_its_owner_only() -> None:
    from genlab.checkpoints.keys import KEYS

    writers: dict[str, set[str]] = {name: set() for name in KEYS}
    strangers = []
    for path in _key_scope_files():
        module = _scope_module(path)
        for line, key in checkpoint_key_writes(path.read_text()):
            writers[key].add(module)
            if not _matches(module, KEYS[key].owner):
                owner = KEYS[key].owner
                strangers.append(f"{path.relative_to(ROOT)}:{line}: {key!r} (owner: {owner})")
    assert not strangers, "checkpoint keys written by a module that does not own them:\n" + (
        "\n".join(strangers)
    )
    # A registered key nobody writes is a stale entry (or its owner moved: update keys.py).
    unwritten = {
        name: key.owner
        for name, key in KEYS.items()
        if not any(_matches(m, key.owner) for m in writers[name])
    }
    assert not unwritten, f"registered checkpoint keys their owner never writes: {unwritten}"


def test_every_registered_owner_exists() -> None:
    from genlab.checkpoints.keys import KEYS

    for key in KEYS.values():
        parts = key.owner.split(".")
        base = (SRC if parts[0] == "genlab" else ROOT).joinpath(*parts)
        assert base.with_suffix(".py").is_file() or (base / "__init__.py").is_file(), key


@pytest.mark.parametrize(
    "source",
    [
        # A literal key in Lightning's hook, whatever its parameter is called.
        "def on_save_checkpoint(self, trainer, module, state):\n    state['mine'] = 1\n",
        # A key constant of the module's own.
        "KEY = 'rng_states'\n\ndef f(checkpoint):\n    return checkpoint.get(KEY)\n",
        # A key imported from somewhere other than genlab.checkpoints.keys.
        "from genlab.resume.rng import RNG_KEY\n\ndef f(ckpt):\n    return ckpt[RNG_KEY]\n",
        "def f(checkpoint):\n    return 'privacy' in checkpoint\n",
        "def f(self):\n    return self.checkpoint.pop('extra', None)\n",
        "import torch\n\ndef f(p):\n    return torch.load(p, weights_only=True)['extra']\n",
        # A registered key as a literal, in any use.
        "def f(d):\n    return d['genlab_config']['model']\n",
    ],
)
def test_the_checkpoint_key_check_flags(source: str) -> None:
    assert checkpoint_key_problems(source), source


def test_the_checkpoint_key_check_allows_registered_and_lightning_keys() -> None:
    source = (
        "from genlab.checkpoints.keys import CONFIG_KEY, PRIVACY_KEY\n"
        "KEEP = ('state_dict', CONFIG_KEY)\n"
        "def on_load_checkpoint(self, trainer, module, checkpoint):\n"
        "    weights = checkpoint['state_dict']\n"
        "    if PRIVACY_KEY in checkpoint:\n"
        "        self.load(checkpoint[PRIVACY_KEY])\n"
        "    return {k: checkpoint[k] for k in KEEP}, checkpoint.get('loops')\n"
        "def g(cfg):\n"
        "    return cfg.get('privacy'), cfg['model']\n"  # config keys, not a checkpoint's
    )
    assert checkpoint_key_problems(source) == []


def test_the_owner_check_sees_writes() -> None:
    source = (
        "from genlab.checkpoints import keys\n"
        "from genlab.checkpoints.keys import STEP_KEY as S\n"
        "def on_save_checkpoint(self, trainer, module, checkpoint):\n"
        "    checkpoint[S] = 1\n"
        "    checkpoint.setdefault(keys.CONFIG_KEY, {})\n"
        "    x = checkpoint[S]\n"  # a read, not a write
    )
    assert checkpoint_key_writes(source) == [(4, "genlab_step"), (5, "genlab_config")]


def test_docs_list_every_checkpoint_key() -> None:
    # docs/security.md's table of what genlab adds to a checkpoint is KEYS, row for row.
    from genlab.checkpoints.keys import KEYS

    text = (ROOT / "docs" / "security.md").read_text()
    heading = "### What genlab adds to a checkpoint\n"
    assert heading in text, "docs/security.md lost its table of checkpoint keys"
    section = text.split(heading, 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| `([^`]+)` \| `([^`]+)` \|", section, flags=re.MULTILINE)
    assert dict(rows) == {name: key.owner for name, key in KEYS.items()}


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


# --- loggers are told apart only in genlab/loggers/ ---------------------------------------------

LOGGER_MODULES = (
    "pytorch_lightning.loggers",
    "lightning.pytorch.loggers",
    "lightning_fabric.loggers",
    "lightning.fabric.loggers",
    "genlab.loggers",
)


def logger_type_checks(source: str) -> list[tuple[int, str]]:
    """(line, class) for each ``isinstance``/``issubclass`` against a logger class: a name
    imported from a loggers module, a ``<module>.loggers.<Class>`` attribute, or any class
    whose name ends in ``Logger`` (Lightning's, ours, a subclass defined in place)."""
    tree = ast.parse(source)
    imported = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and not node.level
        if any(_matches(node.module, m) for m in LOGGER_MODULES)
        for alias in node.names
    }
    found = []
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("isinstance", "issubclass")
            and len(node.args) == 2
        ):
            continue
        kinds = node.args[1]
        for kind in kinds.elts if isinstance(kinds, ast.Tuple) else [kinds]:
            name = ast.unparse(kind)
            last = name.rpartition(".")[2]
            if name in imported or ".loggers." in f".{name}" or last.endswith("Logger"):
                found.append((node.lineno, name))
    return found


def test_only_loggers_tells_loggers_apart() -> None:
    # What differs between loggers (images, resume ids, offline W&B, finishing) lives in one
    # adapter per logger (genlab/loggers/adapters.py); everything else calls adapter(logger).
    hits = [
        f"{path.relative_to(ROOT)}:{line}: isinstance(..., {what})"
        for path in _sources()
        if not path.is_relative_to(PACKAGE / "loggers")
        for line, what in logger_type_checks(path.read_text())
    ]
    assert not hits, "logger classes told apart outside genlab/loggers/ (use its adapters):\n" + (
        "\n".join(hits)
    )


@pytest.mark.parametrize(
    "source",
    [
        "from pytorch_lightning.loggers import WandbLogger\n\nok = isinstance(lg, WandbLogger)\n",
        "from genlab.loggers.metrics_csv import ResumableCSVLogger as R\n\nisinstance(lg, R)\n",
        "import pytorch_lightning as pl\n\nisinstance(lg, (int, pl.loggers.TensorBoardLogger))\n",
        "class MyLogger:\n    pass\n\nissubclass(kind, MyLogger)\n",
        "from lightning.pytorch.loggers.logger import Logger\n\nisinstance(x, Logger)\n",
    ],
)
def test_the_logger_check_flags(source: str) -> None:
    assert logger_type_checks(source), source


def test_the_logger_check_allows_other_type_checks() -> None:
    source = (
        "from pytorch_lightning.callbacks import LearningRateMonitor\n"
        "from genlab.loggers.adapters import adapter\n"
        "isinstance(c, LearningRateMonitor)\nisinstance(v, (int, float))\n"
        "adapter(lg).log_images('samples', grid, 'epoch 1', 0)\n"
    )
    assert logger_type_checks(source) == []

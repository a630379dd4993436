"""The shape of the code: module size, the top-level layout, and what each layer may import.

import-linter (`lint-imports`, run by `make test`) keeps the layer arrows, the cycles and the
forbidden imports; these tests keep what it cannot say, reading the folder lists from the same
contracts in pyproject.toml rather than repeating them:
- layer B's only gevent import is `gevent.lock`, followed transitively through every broker
  module B imports (import-linter sees external packages only as `gevent`);
- `import broker.cli` loads no gevent (the operator tools stay light);
- a module stays under 600 lines (the benchmark's and the tests' too).
Imports are read with `ast`, so an import inside a function counts too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BROKER = REPO / "broker"
MAX_LINES = 600
CONTRACTS = {c["id"]: c for c in
             tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"][
                 "contracts"]}
LAYER_A = CONTRACTS["layer-a"]["source_modules"]
LAYER_B = CONTRACTS["layer-b"]["source_modules"]
TOP_LEVEL = {"__init__.py", "__main__.py", "cli.py", "errors.py", "topics.py"}


def module_files(names: list[str]) -> list[Path]:
    """The files of dotted module or package names (`broker.core`, `broker.errors`)."""
    found = []
    for name in names:
        path = REPO.joinpath(*name.split("."))
        found.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")])
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Absolute module names `path` imports, relative imports resolved. For `from x import y`
    inside broker both x and x.y (y may be a module); `from gevent import lock` is gevent.lock,
    `from gevent.lock import Semaphore` is gevent.lock (names below a module are not modules)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path).split(".") if path.is_relative_to(REPO) else [""]
    if path.name != "__init__.py":
        package = package[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module == "gevent":
                names.update(f"gevent.{alias.name}" for alias in node.names)
                continue
            names.add(module)
            if module.split(".")[0] == "broker":
                names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def broker_file(name: str) -> Path | None:
    path = REPO.joinpath(*name.split("."))
    if path.is_dir():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def gevent_reach(path: Path) -> dict[str, str]:
    """Every gevent module reachable from `path` through broker imports -> the broker module
    that imports it (so a failure names the culprit)."""
    seen: set[Path] = set()
    found: dict[str, str] = {}
    todo = [path]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for name in imports_of(current):
            top = name.split(".")[0]
            if top == "gevent":
                found.setdefault(name, module_name(current))
            elif top == "broker":
                target = broker_file(name)
                if target is not None:
                    todo.append(target)
    return found


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


SIZED_MODULES = sorted(BROKER.rglob("*.py")) + sorted((REPO / "bench").glob("*.py")) + sorted(
    path for path in (REPO / "tests").rglob("*.py") if "node_modules" not in path.parts)


def test_the_contract_lists_name_real_folders():
    for name in LAYER_A + LAYER_B:
        assert broker_file(name) is not None, name
    assert len(module_files(LAYER_B)) > 15


def test_the_top_level_holds_only_the_entry_points_and_the_folders():
    files = {p.name for p in BROKER.glob("*.py")}
    assert files == TOP_LEVEL
    folders = {p.name for p in BROKER.iterdir() if p.is_dir() and p.name != "__pycache__"}
    layered = {entry.strip() for layer in CONTRACTS["layers"]["layers"]
               for entry in layer.replace("|", ":").split(":")}
    assert folders <= layered, folders - layered


@pytest.mark.parametrize("path", SIZED_MODULES, ids=rel)
def test_module_is_at_most_600_lines(path: Path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{rel(path)} has {lines} lines; split it"


@pytest.mark.parametrize("path", module_files(LAYER_B), ids=rel)
def test_layer_b_reaches_only_gevent_lock_from_gevent(path: Path):
    reach = gevent_reach(path)
    assert set(reach) <= {"gevent.lock"}, f"{rel(path)} reaches {reach}"


@pytest.mark.parametrize("path", module_files(LAYER_A), ids=rel)
def test_layer_a_reaches_no_gevent(path: Path):
    assert gevent_reach(path) == {}, rel(path)


def test_importing_the_cli_loads_no_gevent():
    code = "import broker.cli, sys; assert 'gevent' not in sys.modules, 'gevent loaded'"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("tool", ["passwd", "deploy", "inspect"])
def test_operator_tools_never_import_gevent(tool: str):
    code = ("import sys, broker.cli\n"
            "try:\n"
            f"    broker.cli.main([{tool!r}, '--help'])\n"
            "except SystemExit:\n"
            "    pass\n"
            "assert 'gevent' not in sys.modules, 'gevent loaded'\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_gevent_scan_sees_every_import_form(tmp_path: Path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import gevent\n"
        "import gevent.socket as gs\n"
        "from gevent import lock, queue\n"
        "from gevent.lock import Semaphore\n"
        "def later():\n"
        "    from gevent.server import StreamServer\n"
    )
    names = {n for n in imports_of(sample) if n.startswith("gevent")}
    assert names == {"gevent", "gevent.socket", "gevent.lock", "gevent.queue", "gevent.server"}

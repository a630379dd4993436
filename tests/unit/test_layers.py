"""The shape of the code: module size, and what each layer may import from gevent.

import-linter keeps the layer arrows; these tests keep the rules it cannot say: a module stays
under 600 lines (the benchmark's and the tests' too), layer B's only gevent import is
`gevent.lock`, and layer A imports no gevent. Imports are read with `ast`, so an import inside
a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BROKER = Path(__file__).resolve().parents[2] / "broker"
MAX_LINES = 600

LAYER_A = ["codec", "topics", "config", "errors"]
LAYER_B = ["protocol", "context", "router", "registry", "session", "retained", "topic_tree",
           "message", "stats", "store", "disconnect_watch"]


def modules(names: list[str]) -> list[Path]:
    """The files of the named modules and packages under broker/."""
    found = []
    for name in names:
        package = BROKER / name
        if package.is_dir():
            found.extend(sorted(package.rglob("*.py")))
        else:
            found.append(BROKER / f"{name}.py")
    return found


def imported_modules(path: Path) -> set[str]:
    """Every absolute module name `path` imports (for `from x import y`, both x and x.y)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def gevent_imports(path: Path) -> set[str]:
    """The gevent modules `path` imports, as the module a name is taken from."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "gevent")
        elif (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
              and node.module.split(".")[0] == "gevent"):
            if node.module == "gevent":  # `from gevent import lock` imports gevent.lock
                found.update(f"gevent.{a.name}" for a in node.names)
            else:
                found.add(node.module)
    return found


def rel(path: Path) -> str:
    return str(path.relative_to(BROKER.parent))


ALL_MODULES = sorted(BROKER.rglob("*.py"))
# The size rule holds for the benchmark and the tests as well as for the broker.
SIZED_MODULES = ALL_MODULES + sorted((BROKER.parent / "bench").glob("*.py")) + sorted(
    path for path in (BROKER.parent / "tests").rglob("*.py") if "node_modules" not in path.parts)


def test_the_layer_lists_name_real_modules():
    for path in modules(LAYER_A + LAYER_B):
        assert path.is_file(), path
    assert len(ALL_MODULES) > 20


@pytest.mark.parametrize("path", SIZED_MODULES, ids=rel)
def test_module_is_at_most_600_lines(path: Path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{rel(path)} has {lines} lines; split it"


# Known breaches, each a strict xfail so that it shows in every run and the test starts
# failing the day it is fixed (then delete the entry).
KNOWN_LAYER_B_BREACHES: dict[str, str] = {}


def layer_b_params() -> list:
    out = []
    for path in modules(LAYER_B):
        why = KNOWN_LAYER_B_BREACHES.get(rel(path))
        marks = [pytest.mark.xfail(strict=True, reason=why)] if why else []
        out.append(pytest.param(path, marks=marks, id=rel(path)))
    return out


@pytest.mark.parametrize("path", layer_b_params())
def test_layer_b_imports_only_gevent_lock_from_gevent(path: Path):
    assert gevent_imports(path) <= {"gevent.lock"}, rel(path)


@pytest.mark.parametrize("path", modules(LAYER_A), ids=rel)
def test_layer_a_imports_no_gevent(path: Path):
    assert gevent_imports(path) == set(), rel(path)


@pytest.mark.parametrize("path", modules(LAYER_A + LAYER_B), ids=rel)
def test_layers_a_and_b_import_no_sockets(path: Path):
    banned = {"socket", "ssl", "selectors", "asyncio"}
    assert {m.split(".")[0] for m in imported_modules(path)} & banned == set(), rel(path)


def test_the_gevent_scan_sees_every_import_form(tmp_path: Path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import gevent\n"
        "import gevent.socket as gs\n"
        "from gevent import lock, queue\n"
        "from gevent.lock import Semaphore\n"
        "def later():\n"
        "    from gevent.server import StreamServer\n"
        "from .gevent import nothing\n"
    )
    assert gevent_imports(sample) == {"gevent", "gevent.socket", "gevent.lock", "gevent.queue",
                                      "gevent.server"}

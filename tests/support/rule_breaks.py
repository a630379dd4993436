"""Plant one-line breaks of the layer rules in a copy of the repo and show that the checks
`make test` runs (`lint-imports` and tests/unit/test_layers.py) refuse every one of them.

    .venv/bin/python tests/support/rule_breaks.py          # all of them, one line each

tests/unit/test_rule_breaks.py runs a few of these on every `make test`; this script runs the
whole list (about a minute) and prints which check caught each break.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Break:
    """Append `line` to `file` (creating it if missing) in the copy."""

    name: str
    file: str
    line: str
    also: tuple[tuple[str, str], ...] = ()  # more (file, line) pairs for the same break


BREAKS = [
    Break("a new core helper imports gevent.queue and session.py imports it",
          "broker/core/waiting.py", "import gevent.queue",
          (("broker/core/session.py", "from . import waiting"),)),
    Break("passwords.py imports socket", "broker/auth/passwords.py", "import socket"),
    Break("router.py imports threading", "broker/core/router.py", "import threading"),
    Break("router.py imports subprocess", "broker/core/router.py", "import subprocess"),
    Break("the composition root imports an operator tool", "broker/server/root.py",
          "from ..tools import deploy"),
    Break("probe.py imports the composition root", "broker/tools/probe.py",
          "from ..server import root"),
    Break("a cycle inside the I/O layer (transport imports websocket)",
          "broker/net/transport.py", "from . import websocket"),
    Break("deploy_templates imports deploy (a cycle among the tools)",
          "broker/tools/deploy_templates.py", "from . import deploy"),
    Break("the codec imports gevent", "broker/codec/frame.py", "import gevent"),
    Break("topics.py imports asyncio", "broker/topics.py", "import asyncio"),
    Break("the session imports a transport", "broker/core/session.py",
          "from ..net import transport"),
    Break("the store imports the message of the state layer", "broker/store/base.py",
          "from ..core import message"),
    Break("a new module outside every folder", "broker/helpers.py", "X = 1"),
    Break("cli.py imports gevent at the top", "broker/cli.py", "import gevent"),
    Break("configuration loading imports the server", "broker/config/loading.py",
          "from ..server import root"),
    Break("the WebSocket transport imports the state machine", "broker/net/websocket.py",
          "from ..core import protocol"),
]


def copy_repo(dest: Path) -> Path:
    """The parts the checks read: the package, pyproject.toml and the layer test."""
    shutil.copytree(REPO / "broker", dest / "broker",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", dest / "pyproject.toml")
    (dest / "tests" / "unit").mkdir(parents=True)
    shutil.copy(REPO / "tests" / "unit" / "test_layers.py", dest / "tests" / "unit")
    return dest


def plant(root: Path, rule: Break) -> None:
    for file, line in ((rule.file, rule.line), *rule.also):
        path = root / file
        text = path.read_text() if path.exists() else ""
        path.write_text(text + ("" if text.endswith("\n") or not text else "\n") + line + "\n")


def caught_by(root: Path) -> list[str]:
    """The checks that fail on the tree at `root` (empty: the break went through)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    bin_dir = Path(sys.executable).parent
    failed = []
    linter = subprocess.run([str(bin_dir / "lint-imports"), "--no-cache"], cwd=root, env=env,
                            capture_output=True, text=True, timeout=120)
    if linter.returncode != 0:
        failed.append("lint-imports")
    layers = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                             "-p", "no:xdist", "tests/unit/test_layers.py"],
                            cwd=root, env=env, capture_output=True, text=True, timeout=120)
    if layers.returncode != 0:
        failed.append("test_layers")
    return failed


def check(rule: Break, workdir: Path) -> list[str]:
    root = copy_repo(workdir)
    plant(root, rule)
    return caught_by(root)


def main() -> int:
    import tempfile

    missed = 0
    for rule in BREAKS:
        with tempfile.TemporaryDirectory() as tmp:
            failed = check(rule, Path(tmp))
        missed += not failed
        print(f"{'caught by ' + ' and '.join(failed) if failed else 'MISSED':40} {rule.name}")
    print(f"{len(BREAKS) - missed} of {len(BREAKS)} rule breaks caught")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())

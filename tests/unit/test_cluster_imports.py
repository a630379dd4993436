"""A single node never loads redis: the broker's runtime, the CLI and reading a config with a
[cluster] section import neither redis nor hiredis (only broker/cluster/ does, when used)."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
import broker.server.root, broker.cli
from broker.config.loading import load_default, load_text
load_default()
load_text('[cluster]\\nnode_id = "n1"\\n', "x.toml")
loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("redis", "hiredis"))
print(",".join(loaded))
"""


def test_the_runtime_and_the_cli_do_not_import_redis():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "", f"imported: {out.strip()}"


def test_the_check_itself_sees_redis_when_it_is_imported():
    # The same probe must notice redis once something imports it, or it proves nothing.
    out = subprocess.run([sys.executable, "-c", "import redis\n" + CHECK], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert "redis" in out.split(",")

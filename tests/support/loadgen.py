"""The benchmark load generator, built once for every test file that runs it.

`make -C bench` from two pytest-xdist workers at once, on a clean checkout, had one linker
write `bench/build/loadgen` while the other worker ran it (ETXTBSY); the build runs under an
flock, so the second worker waits and then finds it up to date."""

from __future__ import annotations

import fcntl
import subprocess
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
LOADGEN = BENCH / "build" / "loadgen"


def built_loadgen() -> Path:
    """`bench/build/loadgen`, built (without warnings) when missing or older than its source."""
    LOADGEN.parent.mkdir(exist_ok=True)
    with open(LOADGEN.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        build = subprocess.run(["make", "-s", "-C", str(BENCH)], capture_output=True,
                               text=True, timeout=120)
    assert build.returncode == 0, f"building the load generator failed:\n{build.stderr}"
    assert "warning" not in build.stderr, build.stderr
    return LOADGEN

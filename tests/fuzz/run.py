"""Run one fuzz target under atheris (libFuzzer's coverage-guided engine for Python).

    .venv/bin/python tests/fuzz/run.py TARGET [libFuzzer options] [CORPUS_DIR ...]

TARGET is decoder, ws_frames or protocol (tests/fuzz/targets.py). The broker's modules are
imported instrumented, so the fuzzer is guided by the lines and branches of the codec, the
WebSocket frame reader and the state layer. libFuzzer writes new inputs to the first corpus
directory and a crashing input to `-artifact_prefix` (default: the working directory); it
exits 0 when `-runs` inputs raised nothing but the codec's own errors.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import atheris

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))  # `support` (the in-process harness) and `fuzz`
sys.path.insert(0, str(TESTS.parent))  # `broker`, when not installed

with atheris.instrument_imports(include=["broker", "support"]):
    import support.inprocess  # noqa: F401

    import broker.codec
    import broker.core.protocol
    import broker.link.connection
    import broker.net.ws_frames  # noqa: F401

from fuzz.targets import TARGETS  # noqa: E402

MAX_LEN = {"ws_frames": 512}  # libFuzzer's default is 4096 bytes


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: run.py {{{','.join(TARGETS)}}} [libFuzzer options] [corpus ...]")
    target = TARGETS[sys.argv[1]]
    logging.disable(logging.CRITICAL)  # a closing line per bad input would drown the output
    args = sys.argv[2:]
    if not any(arg.startswith("-max_len=") for arg in args):
        # Frame headers are what the reader reads: longer inputs only slow each run down.
        args.insert(0, f"-max_len={MAX_LEN.get(sys.argv[1], 4096)}")
    atheris.Setup([sys.argv[0], *args], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

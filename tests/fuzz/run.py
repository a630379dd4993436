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


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: run.py {{{','.join(TARGETS)}}} [libFuzzer options] [corpus ...]")
    target = TARGETS[sys.argv[1]]
    logging.disable(logging.CRITICAL)  # a closing line per bad input would drown the output
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

"""The fuzzers, briefly, as part of `make test` (`make fuzz` runs 10^6 inputs each).

Every corpus input (tests/fuzz/corpus/<target>/: the codec's catalogues, and `regress_*`
inputs that once found a bug) is replayed through its target in this process; then each
target runs under atheris for a few thousand new inputs from that corpus. A crash names
the input, in hex, to turn into a regression test.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fuzz.targets import TARGETS

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"
# Inputs per target in the short run: a few seconds each on a loaded machine (the protocol
# target runs ~2,000 inputs/s, the decoder ~25,000), beside the corpus replayed first.
SHORT_RUNS = {"decoder": 20_000, "ws_frames": 3_000, "protocol": 3_000}
MAX_SECONDS = 20


def _corpus(target: str) -> list[Path]:
    return sorted((FUZZ / "corpus" / target).iterdir())


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_corpus_replays_without_an_error_but_the_codecs(target):
    files = _corpus(target)
    assert len(files) > 100, "seed the corpus: tests/fuzz/seed.py"
    for path in files:
        try:
            TARGETS[target](path.read_bytes())
        except Exception as exc:
            raise AssertionError(f"{target} corpus input {path.name}: {exc!r}") from exc


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_short_fuzz_run_finds_nothing(target, tmp_path):
    pytest.importorskip("atheris", reason="atheris has wheels for x86_64 only")
    found = tmp_path / "found"
    found.mkdir()
    proc = subprocess.run(
        [sys.executable, str(FUZZ / "run.py"), target, f"-runs={SHORT_RUNS[target]}",
         f"-max_total_time={MAX_SECONDS}", f"-artifact_prefix={tmp_path}/",
         str(found), str(FUZZ / "corpus" / target)],
        capture_output=True, text=True, timeout=MAX_SECONDS + 60, check=False)
    crashes = [p for p in tmp_path.iterdir() if p.is_file()]
    if proc.returncode != 0 or crashes:
        inputs = "\n".join(f"{p.name}: {p.read_bytes().hex()}" for p in crashes)
        raise AssertionError(f"{target}: exit {proc.returncode}\n{inputs}\n"
                             f"{proc.stderr[-3000:]}")
    assert "DONE" in proc.stderr, proc.stderr[-2000:]

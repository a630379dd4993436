"""The benchmark load generator's own correctness: its sequence checker, against a real broker.

`bench/build/loadgen` is built here (`make -C bench`) when missing or older than its source.
Its `--selftest` checks the checker and the MQTT / WebSocket parsers on crafted input; the
runs below push QoS 1 fan-in through a real greenfly and assert that nothing was lost or
reordered, then prove the checker can fail: once told to expect more than was sent, and once
with a publisher that swaps sequence numbers on purpose (a reorder the broker faithfully
delivers). The benchmarks themselves (`make bench`) are not part of the test suite.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from support.loadgen import built_loadgen

NO_LIMITS = "[limits]\nmax_inflight_messages = 0\nmax_queued_messages = 0\n"


@pytest.fixture(scope="module")
def loadgen() -> Path:
    return built_loadgen()


def run_loadgen(binary: Path, *args: str) -> tuple[int, dict, str]:
    done = subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=60)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no JSON report (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.returncode, json.loads(lines[-1]), done.stderr


def fanin(port: int, *extra: str) -> list[str]:
    return ["--port", str(port), "--pubs", "3", "--subs", "1", "--qos", "1", "--window", "20",
            "--count", "2000", "--timeout", "20", "--drain-timeout", "20", "--stall", "1",
            *extra]


def test_selftest_checks_the_sequence_checker_and_parsers(loadgen):
    code, report, stderr = run_loadgen(loadgen, "--selftest")
    assert code == 0, stderr
    assert report["ok"] is True
    assert report["failures"] == 0
    assert report["checks"] > 100


def test_qos1_fanin_through_greenfly_loses_and_reorders_nothing(loadgen, broker_factory):
    broker = broker_factory(NO_LIMITS)
    code, report, stderr = run_loadgen(loadgen, *fanin(broker.port),
                                       "--broker-pid", str(broker.pid))
    assert code == 0, stderr
    assert report["ok"] is True
    assert report["sent"] == report["acked"] == 6000
    assert report["received_distinct"] == report["expected"] == 6000
    assert (report["losses"], report["reorders"], report["unsent"]) == (0, 0, 0)
    assert report["rate"] > 0
    assert report["loadgen_cpu_s"] >= 0


def test_qos1_fanin_over_websockets_loses_and_reorders_nothing(loadgen, broker_factory):
    broker = broker_factory(NO_LIMITS, websockets=True)
    code, report, stderr = run_loadgen(loadgen, *fanin(broker.ws_port, "--ws"))
    assert code == 0, stderr
    assert report["transport"] == "ws"
    assert report["received_distinct"] == 6000
    assert (report["losses"], report["reorders"]) == (0, 0)


def test_checker_fails_the_run_when_more_was_expected_than_arrived(loadgen, broker_factory):
    broker = broker_factory(NO_LIMITS)
    # Every message arrives, but the checker is told each publisher sent 2,100: 300 missing.
    code, report, stderr = run_loadgen(loadgen, *fanin(broker.port, "--expect", "2100"))
    assert code == 1, stderr
    assert report["ok"] is False
    assert report["losses"] == 300
    assert report["received_distinct"] == 6000
    assert "FAIL" in stderr and "missing" in stderr


def test_checker_fails_the_run_on_a_reorder_on_the_wire(loadgen, broker_factory):
    broker = broker_factory(NO_LIMITS)
    # Each publisher swaps the sequence numbers of every 100th pair: 20 swaps x 3 publishers.
    code, report, stderr = run_loadgen(loadgen, *fanin(broker.port, "--fault-swap", "100"))
    assert code == 1, stderr
    assert report["ok"] is False
    assert report["reorders"] == 60
    assert report["losses"] == 0
    assert "reordered" in stderr

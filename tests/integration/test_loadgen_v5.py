"""The load generator speaking MQTT 5 (`--protocol-level 5`, as MQTT.js does with no
properties): what it sends greenfly accepts, what greenfly answers it reads, and its checker
still sees every message. Its v5 parsers are in `--selftest` (test_loadgen.py runs it)."""

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


def run_v5(binary: Path, port: int, *extra: str) -> tuple[int, dict, str]:
    done = subprocess.run(
        [str(binary), "--protocol-level", "5", "--port", str(port), "--pubs", "3", "--subs",
         "1", "--count", "2000", "--timeout", "20", "--drain-timeout", "20", "--stall", "1",
         *extra], capture_output=True, text=True, timeout=60)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no JSON report (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.returncode, json.loads(lines[-1]), done.stderr


@pytest.mark.parametrize("transport", ["tcp", "ws"])
def test_v5_qos1_fanin_through_greenfly_loses_and_reorders_nothing(loadgen, broker_factory,
                                                                   transport):
    broker = broker_factory(NO_LIMITS, websockets=transport == "ws")
    port = broker.port if transport == "tcp" else broker.ws_port
    code, report, stderr = run_v5(loadgen, port, "--qos", "1", "--window", "20",
                                  *(["--ws"] if transport == "ws" else []))
    assert code == 0, stderr
    assert report["protocol_level"] == 5 and report["transport"] == transport
    assert report["sent"] == report["acked"] == 6000
    assert report["received_distinct"] == report["expected"] == 6000
    assert (report["losses"], report["reorders"]) == (0, 0)


def test_v5_qos0_fanout_through_greenfly_delivers_to_every_subscriber(loadgen, broker_factory):
    broker = broker_factory(NO_LIMITS)
    code, report, stderr = run_v5(loadgen, broker.port, "--pubs", "1", "--subs", "5",
                                  "--count", "1000", "--strict")
    assert code == 0, stderr
    assert report["delivered"] == 5000
    assert report["losses"] == 0


def test_v5_window_above_the_brokers_receive_maximum_fails_the_run(loadgen, broker_factory):
    # greenfly's default receive maximum is 20 (max_inflight_messages): a window of 100
    # would break MQTT 5 flow control, and the load generator must refuse to run so.
    broker = broker_factory()
    code, _report, stderr = run_v5(loadgen, broker.port, "--qos", "1", "--window", "100")
    assert code == 3
    assert "receive maximum 20" in stderr

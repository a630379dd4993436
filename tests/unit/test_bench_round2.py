"""Issue 17's table in `make bench`'s report: benchmarks stay out of `make test`, so this
imports the runner's modules and renders the round-2 section from made-up runs, so that the
p99.9, restart memory and queued-memory figures cannot rot unseen. A subprocess, because
bench/ is not a package and its modules (run, report, scenarios) would shadow each other's
names in the test process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"

CHECK = """
import argparse, json
from procs import MemorySampler
from report import report_lines
from scenarios import Run, flow_metrics, restart_memory, scenarios

assert "queued" in [s.name for s in scenarios()]

lat = flow_metrics({"rate": 2000.0, "lat_us": {"n": 6000, "p50": 80.0, "p99": 300.0,
                                               "p999": 1200.0}}, latency=True)
assert lat["p999"] == 1200.0, lat

# the peak up to the port accepting is VmHWM at the last read before it
sampler = MemorySampler(0)
sampler.samples = [(1.0, 40_000, 40_000), (2.0, 30_000, 90_000), (3.0, 50_000, 95_000)]
restart = Run("restart", "greenfly", 1)
restart_memory(restart, sampler, accept_at=2.5, live_kib=60_000)
assert restart.metrics["restart_peak_ratio"] == 1.5, restart.metrics
assert round(restart.metrics["drain_peak_ratio"], 4) == round(95_000 / 60_000, 4)

runs = [
    Run("latency", "greenfly", 1, metrics=lat),
    Run("latency", "mosquitto", 1, metrics={"p50": 100.0, "p99": 200.0, "p999": 1000.0}),
    Run("idle", "greenfly", 1, metrics={"connects_per_s": 6000.0, "kib_per_conn": 0.9}),
    Run("idle", "mosquitto", 1, metrics={"connects_per_s": 5000.0, "kib_per_conn": 0.7}),
    restart,
    Run("restart", "mosquitto", 1, metrics={"restart_peak_ratio": 1.0, "cold_ms": 20.0}),
    Run("queued", "greenfly", 1, metrics={"rss_after_mb": 60.0, "rss_delta_mb": 30.0}),
    Run("queued", "mosquitto", 1, metrics={"rss_after_mb": 40.0, "rss_delta_mb": 28.0}),
    Run("fanin_qos0", "greenfly", 1, metrics={"rate": 130.0}),
    Run("fanin_qos0", "mosquitto", 1, metrics={"rate": 100.0}),
]
args = argparse.Namespace(reps=1, duration=1.0, warmup=0.5, max_lead=1000,
                          names=["latency", "idle", "restart", "queued", "fanin_qos0"],
                          conns=10000, sessions=1000, per_session=100,
                          queued_sessions=2000, queued_per_session=100)
print(json.dumps(report_lines(runs, args, {}, 60.0)))
"""


def row(lines: list[str], start: str) -> list[str]:
    found = [line for line in lines if line.startswith(f"| {start}")]
    assert found, (start, lines)
    return [cell.strip() for cell in found[0].strip("|").split("|")]


def test_round2_section_renders_issue_17s_table():
    done = subprocess.run([sys.executable, "-c", CHECK], cwd=BENCH, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = json.loads(done.stdout)
    start = lines.index("## Issue 17 (performance, round 2): its table, measured")
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("## "))
    section = lines[start:end]
    assert row(section, "connects/s while opening 10,000")[3:] == ["1.20", "ratio >= 1.2", "yes"]
    assert row(section, "memory per idle connection")[4:] == ["<= 1 KiB", "yes"]
    assert row(section, "latency at 2,000 msg/s QoS 0: p50")[3:] == ["0.80", "ratio <= 1", "yes"]
    assert row(section, "latency at 2,000 msg/s QoS 0: p99 us")[3:] == ["1.50", "ratio <= 1",
                                                                        "NO"]
    assert row(section, "latency at 2,000 msg/s QoS 0: p99.9")[3:] == ["1.20", "ratio <= 1.5",
                                                                       "yes"]
    assert row(section, "memory while restarting")[1:] == ["1.50", "1.00", "1.50", "<= 1.2 x",
                                                           "NO"]
    assert row(section, "200,000 queued QoS 1 messages")[1:] == ["60.0", "40.0", "1.50",
                                                                 "<= 50 MB", "NO"]
    floors = lines[lines.index("## No round-1 ratio falls (floors: issue 17's round-1 "
                               "figures)"):]
    assert row(floors, "QoS 0 fan-in 10 -> 1")[3:] == ["1.30", "ratio >= 1.39", "NO"]


def test_run_lists_the_queued_scenario():
    done = subprocess.run([sys.executable, str(BENCH / "run.py"), "--list"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "queued" in [line.split()[0] for line in done.stdout.splitlines()]

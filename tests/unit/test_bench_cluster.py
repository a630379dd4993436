"""bench/cluster_run.py and its scenario definitions: benchmarks stay out of `make test`, so
this imports them and renders a report from made-up runs, so that they cannot rot unseen.
A subprocess, because bench/ is not a package and its modules (run, report, scenarios) would
shadow each other's names in the test process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"

CHECK = """
import json
from cluster_run import report_lines
from cluster_scenarios import cluster_scenarios, cost_metrics
from scenarios import Run

found = []
for s in cluster_scenarios():
    names = [x.variant for x in s.layouts]
    assert len(set(names)) == len(names), names
    assert any(x.nodes == 0 for x in s.layouts), s.name   # the single-node baseline
    for x in s.layouts:
        for node in (*x.pubs, *x.subs):
            assert 1 <= node <= max(x.nodes, 1), (s.name, x)
    found.append(s.name)

run = Run("cl_fanin_qos1", "greenfly", 1, "cluster2")
cost_metrics(run, {"rate": 50000.0, "pids_cpu_pct": [40.0, 50.0, 10.0]}, ["n1", "n2", "redis"])
assert round(run.metrics["us_total"], 3) == 20.0, run.metrics
assert round(run.metrics["us_redis"], 3) == 2.0, run.metrics
run.metrics["rate"] = 50000.0
table = report_lines([run])
print(json.dumps({"scenarios": found, "table": table}))
"""


def test_cluster_scenarios_import_and_report():
    done = subprocess.run([sys.executable, "-c", CHECK], cwd=BENCH, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["scenarios"] == ["cl_fanout_qos0", "cl_fanin_qos1", "cl_durable"]
    row = next(line for line in out["table"] if line.startswith("| cl_fanin_qos1 | cluster2"))
    assert "| 50,000 |" in row and "| 20.00 |" in row and "| 1/1 |" in row


def test_cluster_run_lists_its_scenarios():
    done = subprocess.run([sys.executable, str(BENCH / "cluster_run.py"), "--list"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert [line.split()[0] for line in done.stdout.splitlines()] == [
        "cl_fanout_qos0", "cl_fanin_qos1", "cl_durable"]

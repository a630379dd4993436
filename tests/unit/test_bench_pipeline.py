"""bench/pipeline.py runs every scenario: nothing else runs it, so without this it rots (it
once crashed at HEAD for months because its fake transport lacked what Connection uses)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

PIPELINE = Path(__file__).resolve().parents[2] / "bench" / "pipeline.py"


@pytest.mark.parametrize("scenario", ["fanin", "fanout", "qos1", "durable"])
def test_pipeline_scenario_runs_and_reports(scenario, tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path))  # the durable scenario's journal goes here
    done = subprocess.run([sys.executable, str(PIPELINE), "--scenario", scenario,
                           "--messages", "256", "--repeat", "1"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(rf"{scenario}: \d+\.\d+ us per delivered message \(best of 1: "
                        r"\d+\.\d+\)\n", done.stdout), done.stdout

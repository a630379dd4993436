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


@pytest.mark.parametrize(("scenario", "level"), [
    ("fanin", 4), ("fanout", 4), ("qos1", 4), ("durable", 4), ("fanin", 5), ("qos1", 5),
    ("durable", 5)])
def test_pipeline_scenario_runs_and_reports(scenario, level, tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path))  # the durable scenario's journal goes here
    done = subprocess.run([sys.executable, str(PIPELINE), "--scenario", scenario,
                           "--messages", "256", "--repeat", "1", "--protocol-level", str(level)],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    name = f"{scenario}_v5" if level == 5 else scenario
    assert re.fullmatch(rf"{name}: \d+\.\d+ us per delivered message \(best of 1: "
                        r"\d+\.\d+\)\n", done.stdout), done.stdout

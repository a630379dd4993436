"""The command line that runs the broker is parsed without importing any operator tool, and
parses to the same thing as with the full parser; anything else gets the full parser."""

from __future__ import annotations

import subprocess
import sys

import pytest

from broker.cli import build_parser, runs_the_broker

RUNS = [[], ["-c", "x.toml"], ["--config", "x.toml"], ["--config=x.toml"], ["run"],
        ["run", "-c", "x.toml"], ["-c", "passwd"], ["-c", "x.toml", "run", "-c", "y.toml"]]
OTHERS = [["-h"], ["--help"], ["run", "--help"], ["-c", "x.toml", "run", "-h"], ["check"],
          ["-c", "x.toml", "check"], ["passwd", "f"], ["inspect"], ["clients"], ["bogus"]]


@pytest.mark.parametrize("argv", RUNS, ids=" ".join)
def test_a_broker_run_line_parses_the_same_without_the_tools(argv: list[str]):
    assert runs_the_broker(argv)
    lean = vars(build_parser(tools=False).parse_args(argv))
    full = vars(build_parser().parse_args(argv))
    assert {k: v for k, v in lean.items() if k != "handler"} == \
        {k: v for k, v in full.items() if k != "handler"}


@pytest.mark.parametrize("argv", OTHERS, ids=" ".join)
def test_help_check_tools_and_typos_get_the_full_parser(argv: list[str]):
    assert not runs_the_broker(argv)


def test_parsing_a_run_line_imports_no_tool():
    code = ("import sys, broker.cli\n"
            "broker.cli.build_parser(tools=not broker.cli.runs_the_broker(['-c', 'x.toml']))\n"
            "print(sorted(m for m in sys.modules if m.startswith('broker.tools')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "[]"

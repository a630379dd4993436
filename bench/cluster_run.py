#!/usr/bin/env python3
"""Cluster benchmarks (issue 16): one node vs one clustered node vs two nodes on one Redis,
and durable QoS 1 on Redis vs the file journal, with the CPU per message of every node and
of redis-server.

    .venv/bin/python bench/cluster_run.py                   # all, 3 repetitions
    .venv/bin/python bench/cluster_run.py --scenario cl_durable --reps 5 --duration 5
    .venv/bin/python bench/cluster_run.py --list

Nodes and redis-server are pinned together to CPU 0 and the load generator to CPU 1, so every
layout has the same core for its servers: on 2 cores the figures show what the cluster path
costs, not what more cores would give. Scenario definitions are in cluster_scenarios.py;
everything started is stopped by PID on every way out, as with run.py.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from cluster_scenarios import cluster_scenarios, derive_redis, runner
from procs import BENCH, REPO, kill_everything, raise_nofile
from report import machine
from run import build, on_sigterm
from scenarios import Context, Run

RESULTS = BENCH / "results"

COLUMNS = [("rate", "msgs/s", 0), ("p50", "p50 µs", 0), ("p99", "p99 µs", 0),
           ("us_n1", "µs/msg node 1", 2), ("us_n2", "µs/msg node 2", 2),
           ("us_redis", "µs/msg redis", 2), ("us_total", "µs/msg total", 2),
           ("redis_scripts_per_msg", "Redis scripts/msg", 2),
           ("redis_publish_per_msg", "Redis PUBLISH/msg", 2),
           ("redis_us_per_script", "µs inside Redis per script", 2)]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    names = [s.name for s in cluster_scenarios()]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="scenarios: " + ", ".join(names))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--duration", type=float, default=4.0, help="measured seconds (4)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before (1)")
    parser.add_argument("--scenario", action="append", metavar="NAME")
    parser.add_argument("--max-lead", type=int, default=1000)
    parser.add_argument("--nice", type=int, default=0)
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--report", metavar="RUNS.jsonl", help="tables of an earlier run")
    args = parser.parse_args(argv)
    chosen = [n for item in (args.scenario or names) for n in item.split(",") if n]
    if set(chosen) - set(names):
        parser.error(f"choose scenarios from {', '.join(names)}")
    args.names = [n for n in names if n in chosen]
    return args


def cell(vals: list[float], digits: int) -> str:
    if not vals:
        return "-"
    med = statistics.median(vals)
    return (f"{med:,.{digits}f} ({min(vals):,.{digits}f}-{max(vals):,.{digits}f})"
            if len(vals) > 1 else f"{med:,.{digits}f}")


def _by_layout(runs: list[Run]) -> Iterator[tuple[Any, Any, list[Run]]]:
    """(scenario, layout, its runs) for every layout that ran, in the scenarios' order."""
    for scenario in cluster_scenarios():
        for layout in scenario.layouts:
            mine = [r for r in runs if r.scenario == scenario.name
                    and r.variant == layout.variant]
            if mine:
                yield scenario, layout, mine


def report_lines(runs: list[Run]) -> list[str]:
    lines = ["| scenario | layout | " + " | ".join(c[1] for c in COLUMNS) + " | runs ok |",
             "|---|---|" + "---:|" * (len(COLUMNS) + 1)]
    for scenario, layout, mine in _by_layout(runs):
        ok = [r for r in mine if r.ok]
        cells = [cell([r.metrics[k] for r in ok if k in r.metrics], d)
                 for k, _, d in COLUMNS]
        lines.append(f"| {scenario.name} | {layout.variant} | " + " | ".join(cells)
                     + f" | {len(ok)}/{len(mine)} |")
    lines += ["", "| scenario | layout | other processes' CPU, median (max) % | "
              "load generator max % | servers' CPU, median % of a core | log issues |",
              "|---|---|---:|---:|---:|---|"]
    for scenario, layout, mine in _by_layout(runs):
        other = [r.other_cpu_pct for r in mine if r.other_cpu_pct is not None]
        lg = [r.loadgen_cpu_pct for r in mine if r.loadgen_cpu_pct is not None]
        srv = [r.metrics["cpu_pct_total"] for r in mine if "cpu_pct_total" in r.metrics]
        issues = "; ".join(sorted({i for r in mine for i in r.log_issues}))[:200]
        lines.append(f"| {scenario.name} | {layout.variant} | "
                     + (f"{statistics.median(other):.0f} ({max(other):.0f})" if other
                        else "-")
                     + (f" | {max(lg):.0f}" if lg else " | -")
                     + (f" | {statistics.median(srv):.0f}" if srv else " | -")
                     + f" | {issues or '-'} |")
    failed = [r for r in runs if not r.ok]
    for r in failed:
        lines.append(f"- FAILED rep {r.rep} {r.scenario} {r.variant}: {r.error[:300]}")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for s in cluster_scenarios():
            print(f"{s.name:15} {s.title}; layouts {', '.join(x.variant for x in s.layouts)}")
        return 0
    if args.report:
        runs = [Run(**json.loads(line)) for line in Path(args.report).read_text().splitlines()
                if '"scenario"' in line]
        for run in runs:
            for key in ("redis_calls_per_msg", "redis_cmd_us_per_call"):  # the first runs'
                run.metrics.pop(key, None)
            derive_redis(run)
        print("\n".join(report_lines(runs)))
        return 0
    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    raise_nofile()
    build(make=not args.no_build)
    info = machine()
    chosen = [s for s in cluster_scenarios() if s.name in args.names]
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    raw_path = RESULTS / f"cluster-{stamp}.jsonl"
    runs: list[Run] = []
    started = time.monotonic()
    interrupted = False
    with tempfile.TemporaryDirectory(prefix="greenfly-clbench-") as tmp, \
            open(raw_path, "w") as raw:
        ctx = Context(args, Path(tmp))
        raw.write(json.dumps({"meta": {"info": info, "argv": sys.argv[1:]}}) + "\n")
        try:
            for rep in range(1, args.reps + 1):
                for scenario in chosen:
                    t0 = time.monotonic()
                    try:
                        done = runner(scenario)(ctx, rep)
                    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                        done = [Run(scenario.name, "greenfly", rep, ok=False, error=str(exc))]
                    for r in done:
                        runs.append(r)
                        raw.write(json.dumps(r.__dict__) + "\n")
                        raw.flush()
                        shown = ", ".join(f"{k}={v:,.2f}" for k, v in r.metrics.items())
                        print(f"  rep {rep} {r.scenario:15} {r.variant:9} "
                              f"{time.monotonic() - t0:5.1f}s  "
                              + (shown if r.ok else f"FAILED: {r.error[:300]}"), flush=True)
        except KeyboardInterrupt:
            interrupted = True
            print("\ninterrupted: the table covers the runs done", file=sys.stderr)
        finally:
            kill_everything()
    lines = report_lines(runs)
    lines.append("\n" + "; ".join(f"{k}: {v}" for k, v in info.items())
                 + f"; whole run {time.monotonic() - started:.0f} s")
    out_path = RESULTS / f"cluster-{stamp}.md"
    out_path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwritten: {out_path.relative_to(REPO)} (runs: {raw_path.relative_to(REPO)})")
    return 130 if interrupted else 1 if any(not r.ok for r in runs) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        kill_everything()

#!/usr/bin/env python3
"""greenfly beside Mosquitto: the benchmark runner behind `make bench`.

Builds the C load generator (bench/loadgen.c, `make -C bench`), then, for each repetition,
runs every scenario against greenfly and against Mosquitto one after the other (the order
alternates between repetitions, so drift on a shared machine hits both alike). Each run gets
a fresh broker on free loopback ports with a fresh data directory, pinned with taskset to
CPU 0 while the load generator runs on CPU 1. Prints per scenario the median (min-max) for
each broker and the ratio greenfly/Mosquitto against the goals of issue 7, and writes the
table as markdown (and every run as a JSON line) into bench/results/.

    .venv/bin/python bench/run.py                      # everything, 3 repetitions
    .venv/bin/python bench/run.py --scenario latency --reps 5 --duration 8
    .venv/bin/python bench/run.py --list

Brokers are stopped by PID on every way out (errors, Ctrl-C, SIGTERM). Nothing here sleeps
in the hope that something is ready: ports are polled, and every wait has a timeout.

The runner is split by job, each module in bench/ beside this one: procs.py (the processes
we started, ports, /proc), brokers.py (one broker under test), scenarios.py (what each
scenario does and how one run is measured), report.py (the tables). This file is the command
line. bench/ is not a package: run as a script, Python puts bench/ first on sys.path, which
is how these modules import each other.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from brokers import BROKERS, MOSQUITTO
from procs import BENCH, BROKER_CPU, LOADGEN_CPU, REPO, kill_everything, raise_nofile
from report import machine, report_lines
from scenarios import LOADGEN, Context, Run, scenarios

RESULTS = BENCH / "results"


def on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# -- main -----------------------------------------------------------------------------------

def ensure_mosquitto() -> None:
    if MOSQUITTO.exists():
        return
    if os.geteuid() != 0:
        raise SystemExit(f"{MOSQUITTO} is missing: install the Debian package (as root: "
                         "apt-get install mosquitto) or run this as root")
    print("installing Mosquitto (Debian package)...", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "mosquitto"],
                   check=True, env=env, timeout=900)
    if not MOSQUITTO.exists():
        raise SystemExit(f"apt-get installed mosquitto but {MOSQUITTO} is still missing")


def build(make: bool) -> None:
    if make or not LOADGEN.exists():
        subprocess.run(["make", "-s", "-C", str(BENCH)], check=True, timeout=300)
    check = subprocess.run([str(LOADGEN), "--selftest"], capture_output=True, text=True,
                           timeout=60)
    if check.returncode != 0:
        raise SystemExit(f"the load generator's self-test failed:\n{check.stdout}{check.stderr}")
    # greenfly's bytecode, as an installed broker has it (pip compiles it): a checkout run with
    # PYTHONDONTWRITEBYTECODE would compile every module at each start, ~70 ms of a cold start.
    compileall.compile_dir(str(REPO / "broker"), quiet=1)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    names = [s.name for s in scenarios()]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="scenarios: " + ", ".join(names))
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--duration", type=float, default=5.0,
                        help="measured seconds per flow run (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="seconds before measuring (default 1)")
    parser.add_argument("--scenario", action="append", metavar="NAME",
                        help="run only these (repeat or comma-separate); default all")
    parser.add_argument("--brokers", default="greenfly,mosquitto",
                        help="comma-separated: greenfly, mosquitto (default both)")
    parser.add_argument("--conns", type=int, default=10_000, help="idle connections (10000)")
    parser.add_argument("--hold", type=float, default=2.0,
                        help="seconds the idle connections are held before RSS is read (2)")
    parser.add_argument("--sessions", type=int, default=1000, help="restart: sessions (1000)")
    parser.add_argument("--per-session", type=int, default=100,
                        help="restart: queued messages per session (100)")
    parser.add_argument("--queued-sessions", type=int, default=2000,
                        help="queued: offline persistent sessions (2000)")
    parser.add_argument("--queued-per-session", type=int, default=100,
                        help="queued: QoS 1 messages queued for each (100; 200,000 in all)")
    parser.add_argument("--max-lead", type=int, default=1000,
                        help="QoS 0 flows: messages a publisher may run ahead of its slowest "
                        "subscriber (1000); keeps unlimited broker queues from growing")
    parser.add_argument("--nice", type=int, default=0,
                        help="niceness for brokers and load generator (negative needs root); "
                        "helps on a machine shared with other work")
    parser.add_argument("--no-build", action="store_true",
                        help="do not run make for bench/build/loadgen (it is still self-tested)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--report", metavar="RUNS.jsonl",
                        help="print the tables again from a results file, running nothing")
    args = parser.parse_args(argv)
    chosen = [n for item in (args.scenario or names) for n in item.split(",") if n]
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; choose from {', '.join(names)}")
    args.names = [n for n in names if n in chosen]
    args.broker_list = [b.strip() for b in args.brokers.split(",") if b.strip()]
    if not args.broker_list or set(args.broker_list) - set(BROKERS):
        parser.error("--brokers takes greenfly and/or mosquitto")
    if args.reps < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--reps >= 1, --duration > 0, --warmup >= 0")
    return args

META_KEYS = ("reps", "duration", "warmup", "max_lead", "names", "broker_list", "conns",
             "sessions", "per_session", "queued_sessions", "queued_per_session", "nice")


def rerender(path: str) -> int:
    """The tables of an earlier run, from its JSON lines (the first holds the settings)."""
    runs, meta, elapsed = [], {}, 0.0
    for line in Path(path).read_text().splitlines():
        record = json.loads(line)
        if "meta" in record:
            meta = record["meta"]
        elif "elapsed" in record:
            elapsed = record["elapsed"]
        else:
            runs.append(Run(**record))
    args = argparse.Namespace(**meta.get("args", {}))
    print("\n".join(report_lines(runs, args, meta.get("info", {}), elapsed)))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for s in scenarios():
            print(f"{s.name:15} {s.title}")
        return 0
    if args.report:
        return rerender(args.report)
    signal.signal(signal.SIGTERM, on_sigterm)
    # Ctrl-C stops us even when started from a shell that set SIGINT to ignored (a background
    # job): the brokers must not outlive the runner.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    nofile = raise_nofile()
    if "idle" in args.names and nofile < args.conns + 200:
        print(f"warning: RLIMIT_NOFILE is {nofile}; {args.conns} idle connections need more",
              file=sys.stderr)
    if "mosquitto" in args.broker_list:
        ensure_mosquitto()
    build(make=not args.no_build)
    info = machine()
    chosen = [s for s in scenarios() if s.name in args.names]
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    raw_path = RESULTS / f"bench-{stamp}.jsonl"
    runs: list[Run] = []
    started = time.monotonic()
    pin = (os.cpu_count() or 1) >= 2
    print(f"greenfly vs Mosquitto: {len(chosen)} scenarios x {args.reps} repetitions; "
          f"brokers on CPU {BROKER_CPU}, load generator on CPU {LOADGEN_CPU}"
          + ("" if pin else " (one CPU: not pinned)"), flush=True)
    interrupted = False
    with tempfile.TemporaryDirectory(prefix="greenfly-bench-") as tmp, \
            open(raw_path, "w") as raw:
        ctx = Context(args, Path(tmp))
        raw.write(json.dumps({"meta": {"args": {k: getattr(args, k) for k in META_KEYS},
                                       "info": info}}) + "\n")
        try:
            for rep in range(1, args.reps + 1):
                for scenario in chosen:
                    order = args.broker_list if rep % 2 else args.broker_list[::-1]
                    for kind in order:
                        t0 = time.monotonic()
                        try:
                            done = scenario.run(ctx, kind, rep)
                        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                            done = [Run(scenario.name, kind, rep, ok=False, error=str(exc))]
                        for r in done:
                            runs.append(r)
                            raw.write(json.dumps(r.__dict__) + "\n")
                            raw.flush()
                            print(f"  rep {rep} {scenario.name:14} {r.variant:9} {kind:9} "
                                  f"{time.monotonic() - t0:5.1f}s  " + summary(r), flush=True)
        except KeyboardInterrupt:
            interrupted = True
            print("\ninterrupted: stopping the brokers; the table covers the runs done",
                  file=sys.stderr)
        finally:
            kill_everything()
            raw.write(json.dumps({"elapsed": time.monotonic() - started}) + "\n")
    elapsed = time.monotonic() - started
    lines = report_lines(runs, args, info, elapsed)
    out_path = RESULTS / f"bench-{stamp}.md"
    out_path.write_text("\n".join(lines) + "\n")
    print()
    print("\n".join(lines))
    print(f"\nwritten: {out_path.relative_to(REPO)} (runs: {raw_path.relative_to(REPO)})")
    failed = sum(not r.ok for r in runs)
    if failed:
        print(f"{failed} run(s) FAILED (see above)", file=sys.stderr)
    return 130 if interrupted else 1 if failed else 0


def summary(run: Run) -> str:
    if not run.ok:
        return f"FAILED: {run.error[:300]}"
    shown = ", ".join(f"{k}={v:,.1f}" for k, v in run.metrics.items())
    cpu = f"; loadgen {run.loadgen_cpu_pct:.0f}%" if run.loadgen_cpu_pct is not None else ""
    if run.broker_core_pct is not None:
        cpu += f", CPU {BROKER_CPU} busy {run.broker_core_pct:.0f}%"
    other = f", other {run.other_cpu_pct:.0f}%" if run.other_cpu_pct is not None else ""
    soft = f", softirq {run.softirq_pct:.0f}%" if run.softirq_pct is not None else ""
    return shown + cpu + other + soft


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        kill_everything()

"""Queued messages in memory: greenfly's resident memory holding QoS 1 messages for offline
persistent sessions, and its peak while restarting with them.

Starts greenfly alone (bench/brokers.py's config: persistence on, fsync "always", no queue
limits), reads its RSS once listening, has the load generator's fill mode queue
`--per-session` QoS 1 messages of `--payload` bytes for each of `--sessions` offline
persistent sessions (2,000 x 100 = 200,000 by default), reads the RSS after filling (the live
state), kills it with SIGKILL, restarts it on the same journal and reads the RSS and the peak
(VmHWM) once it listens again. Prints one line per figure. Not part of the test suite.

    .venv/bin/python bench/queued_memory.py [--sessions 2000] [--per-session 100]
        [--payload 64] [--reps 1]
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from brokers import Broker, BrokerOptions
from procs import REPO, kill_everything, raise_nofile, reap, register
from scenarios import LOADGEN


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def settle_kib(pid: int) -> int:
    """RSS once the broker stopped changing it (the journal writer drains after the fill)."""
    last = status_kib(pid, "VmRSS")
    for _ in range(20):
        time.sleep(0.25)
        now = status_kib(pid, "VmRSS")
        if abs(now - last) < 256:
            return now
        last = now
    return last


def one_run(args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    broker = Broker("greenfly", workdir, BrokerOptions(fsync="always", persistence=True),
                    pin=False, nice=0)
    tag = secrets.token_hex(3)
    figures: dict[str, float] = {}
    try:
        broker.start()
        figures["empty_mib"] = settle_kib(broker.pid) / 1024
        fill = register(subprocess.Popen(
            [str(LOADGEN), "--port", str(broker.tcp_port), "--mode", "fill", "--sessions",
             str(args.sessions), "--per-session", str(args.per_session), "--pubs", "10",
             "--window", "100", "--payload", str(args.payload), "--tag", tag,
             "--timeout", "300", "--drain-timeout", "300"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        out, err = fill.communicate(timeout=900)
        reap(fill)
        if fill.returncode != 0:
            raise RuntimeError(f"fill failed: {err[-500:]}")
        report = json.loads(out.strip().splitlines()[-1])
        figures["fill_rate"] = report.get("rate", 0.0)
        figures["filled_mib"] = settle_kib(broker.pid) / 1024
        broker.kill9()
        broker.start()
        figures["restart_ms"] = (broker.ready_at - broker.started_at) * 1000
        figures["restarted_mib"] = status_kib(broker.pid, "VmRSS") / 1024
        figures["restart_peak_mib"] = status_kib(broker.pid, "VmHWM") / 1024
    finally:
        broker.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--per-session", type=int, default=100)
    parser.add_argument("--payload", type=int, default=64)
    parser.add_argument("--reps", type=int, default=1)
    args = parser.parse_args()
    raise_nofile()
    runs = []
    try:
        for _ in range(args.reps):
            with tempfile.TemporaryDirectory(prefix="gf-queued-") as tmp:
                runs.append(one_run(args, Path(tmp)))
    finally:
        kill_everything()
    total = args.sessions * args.per_session
    print(f"{total:,} queued QoS 1 messages of {args.payload} B in {args.sessions:,} offline "
          f"sessions, {len(runs)} run(s), median (min-max):")
    for key, label in (("empty_mib", "RSS listening, empty, MiB"),
                       ("filled_mib", "RSS after filling, MiB"),
                       ("restart_ms", "restart: process start -> port accepts, ms"),
                       ("restarted_mib", "RSS after the restart, MiB"),
                       ("restart_peak_mib", "peak RSS while restarting (VmHWM), MiB")):
        values = [run[key] for run in runs]
        print(f"  {label:46s} {statistics.median(values):8.1f} "
              f"({min(values):.1f}-{max(values):.1f})")
    filled = statistics.median(run["filled_mib"] for run in runs)
    empty = statistics.median(run["empty_mib"] for run in runs)
    peak = statistics.median(run["restart_peak_mib"] for run in runs)
    print(f"  bytes per queued message (filled - empty): {(filled - empty) * 1048576 / total:.0f}")
    print(f"  restart peak / RSS after filling: {peak / filled:.2f}")


if __name__ == "__main__":
    main()

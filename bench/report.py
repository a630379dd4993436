"""The benchmark report: the markdown tables bench/run.py prints and writes to bench/results/.

It exists to turn Run records into figures: per row the median (min-max) for each broker and
the ratio greenfly/Mosquitto against the goals of issue 7, the CPU cost per unit of work, the
health of the runs, and the machine they ran on. It runs nothing, so `run.py --report` can
render an earlier run's JSON lines again.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import statistics
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from brokers import BROKERS, MOSQUITTO
from procs import REPO
from scenarios import Run


@dataclass
class Goal:
    text: str
    check: Callable[[float | None, float | None], bool | None]  # (greenfly, ratio) -> met?


def ratio_at_least(x: float) -> Goal:
    return Goal(f"ratio >= {x:g}", lambda g, r: None if r is None else r >= x)


def ratio_at_most(x: float) -> Goal:
    return Goal(f"ratio <= {x:g}", lambda g, r: None if r is None else r <= x)


def greenfly_at_least(x: float, unit: str) -> Goal:
    return Goal(f">= {x:,.0f} {unit}", lambda g, r: None if g is None else g >= x)


def greenfly_at_most(x: float, unit: str) -> Goal:
    return Goal(f"<= {x:g} {unit}", lambda g, r: None if g is None else g <= x)


@dataclass
class Row:
    label: str
    scenario: str
    key: str
    goal: Goal | None = None
    gf_variant: str = ""
    mq_variant: str = ""
    digits: int = 0


ROWS = [
    Row("QoS 0 fan-in 10 -> 1, delivered msgs/s", "fanin_qos0", "rate", ratio_at_least(0.5)),
    Row("QoS 0 fan-out 1 -> 100, delivered msgs/s", "fanout_qos0", "rate", ratio_at_least(1.0)),
    Row("QoS 1 fan-in 10 x window 100, msgs/s (fsync never)", "fanin_qos1", "rate",
        ratio_at_least(0.5)),
    Row("QoS 2 fan-in 10 x window 100, msgs/s (fsync never)", "fanin_qos2", "rate",
        ratio_at_least(0.5)),
    Row("latency at 2,000 msg/s QoS 0: p50 us", "latency", "p50", ratio_at_most(1.5)),
    Row("latency at 2,000 msg/s QoS 0: p99 us", "latency", "p99", ratio_at_most(2.0)),
    Row("10,000 idle connections: KiB per connection", "idle", "kib_per_conn",
        greenfly_at_most(4, "KiB"), digits=2),
    Row("connects/s while opening them", "idle", "connects_per_s", ratio_at_least(0.5)),
    Row("QoS 0 fan-in over WebSockets, delivered msgs/s", "ws_fanin_qos0", "rate",
        ratio_at_least(0.4)),
    Row("MQTT 5 QoS 0 fan-in 10 -> 1, delivered msgs/s", "fanin_qos0_v5", "rate"),
    Row("MQTT 5 QoS 0 fan-out 1 -> 100, delivered msgs/s", "fanout_qos0_v5", "rate"),
    Row("MQTT 5 QoS 1 fan-in 10 x window 100, msgs/s", "fanin_qos1_v5", "rate"),
    Row("durable QoS 1 fan-in, greenfly fsync=always", "durable", "rate",
        greenfly_at_least(20_000, "msgs/s"), "always", "persistence"),
    Row("durable QoS 1 fan-in, greenfly fsync=interval", "durable", "rate", None, "interval",
        "persistence"),
    Row("durable QoS 1 fan-in, greenfly fsync=never", "durable", "rate", None, "never",
        "persistence"),
    Row("restart, 100k queued: process start -> port accepts, ms", "restart", "start_ms"),
    Row("restart: port accepts -> first queued message, ms", "restart", "first_ms", digits=1),
    Row("restart: all 100,000 delivered, in order, s (from accept)", "restart", "all_s",
        digits=2),
    Row("cold start, empty data dir -> port accepts, ms", "restart", "cold_ms"),
    Row("filling the 1,000 offline sessions, QoS 1 msgs/s", "restart", "fill_rate"),
]

COST_ROWS = [
    Row("QoS 0 fan-in, us per delivered msg", "fanin_qos0", "cpu_us_per_msg", digits=2),
    Row("... all work on the broker's CPU", "fanin_qos0", "core_us_per_msg", digits=2),
    Row("QoS 0 fan-out, us per delivered msg", "fanout_qos0", "cpu_us_per_msg", digits=2),
    Row("... all work on the broker's CPU", "fanout_qos0", "core_us_per_msg", digits=2),
    Row("QoS 1 fan-in, us per delivered msg", "fanin_qos1", "cpu_us_per_msg", digits=2),
    Row("... all work on the broker's CPU", "fanin_qos1", "core_us_per_msg", digits=2),
    Row("QoS 2 fan-in, us per delivered msg", "fanin_qos2", "cpu_us_per_msg", digits=2),
    Row("WebSocket QoS 0 fan-in, us per delivered msg", "ws_fanin_qos0", "cpu_us_per_msg",
        digits=2),
    Row("... all work on the broker's CPU", "ws_fanin_qos0", "core_us_per_msg", digits=2),
    Row("MQTT 5 QoS 0 fan-in, us per delivered msg", "fanin_qos0_v5", "cpu_us_per_msg",
        digits=2),
    Row("MQTT 5 QoS 0 fan-out, us per delivered msg", "fanout_qos0_v5", "cpu_us_per_msg",
        digits=2),
    Row("MQTT 5 QoS 1 fan-in, us per delivered msg", "fanin_qos1_v5", "cpu_us_per_msg",
        digits=2),
    Row("durable, greenfly fsync=always, us per msg", "durable", "cpu_us_per_msg", None,
        "always", "persistence", digits=2),
    Row("idle: us per connect", "idle", "broker_cpu_us_per_connect", digits=1),
]


def round2_rows(args: argparse.Namespace) -> list[Row]:
    """Issue 17's table, row for row, with its goals (Mosquitto = 1 where a ratio is asked)."""
    conns = getattr(args, "conns", 10_000)
    restart = getattr(args, "sessions", 1000) * getattr(args, "per_session", 100)
    queued = getattr(args, "queued_sessions", 2000) * getattr(args, "queued_per_session", 100)
    return [
        Row(f"connects/s while opening {conns:,} connections", "idle", "connects_per_s",
            ratio_at_least(1.2)),
        Row("memory per idle connection, KiB", "idle", "kib_per_conn",
            greenfly_at_most(1.0, "KiB"), digits=2),
        Row("latency at 2,000 msg/s QoS 0: p50 us", "latency", "p50", ratio_at_most(1.0)),
        Row("latency at 2,000 msg/s QoS 0: p99 us", "latency", "p99", ratio_at_most(1.0)),
        Row("latency at 2,000 msg/s QoS 0: p99.9 us", "latency", "p999", ratio_at_most(1.5)),
        Row("cold start, empty data dir -> port accepts, ms", "restart", "cold_ms",
            greenfly_at_most(300, "ms")),
        Row(f"restart with {restart:,} queued: process start -> port accepts, ms", "restart",
            "start_ms", greenfly_at_most(1000, "ms")),
        Row(f"... then until all {restart:,} delivered in order, s (from accept)", "restart",
            "all_s", ratio_at_most(1.0), digits=2),
        Row("memory while restarting: peak RSS start -> port accepts / live RSS before the "
            "kill", "restart", "restart_peak_ratio", greenfly_at_most(1.2, "x"), digits=2),
        Row("... peak RSS until all delivered / live RSS before the kill", "restart",
            "drain_peak_ratio", digits=2),
        Row("... live RSS before the kill, MiB", "restart", "live_rss_mib", digits=1),
        Row(f"{queued:,} queued QoS 1 messages (64 B) for offline sessions: broker RSS, MB",
            "queued", "rss_after_mb", greenfly_at_most(50, "MB"), digits=1),
        Row("... RSS growth while filling them, MB", "queued", "rss_delta_mb", digits=1),
        Row("... bytes of RSS per queued message", "queued", "bytes_per_msg"),
    ]


# Round 1's ratios as issue 17 quotes them (one interleaved run, 2026-11-30): none may fall.
ROUND1_ROWS = [
    Row("QoS 0 fan-in 10 -> 1, delivered msgs/s", "fanin_qos0", "rate", ratio_at_least(1.39)),
    Row("QoS 0 fan-out 1 -> 100, delivered msgs/s", "fanout_qos0", "rate",
        ratio_at_least(6.7)),
    Row("QoS 1 fan-in 10 x window 100, msgs/s (fsync never)", "fanin_qos1", "rate",
        ratio_at_least(1.5)),
    Row("QoS 2 fan-in 10 x window 100, msgs/s (fsync never)", "fanin_qos2", "rate",
        ratio_at_least(2.1)),
    Row("QoS 0 fan-in over WebSockets, delivered msgs/s", "ws_fanin_qos0", "rate",
        ratio_at_least(1.7)),
    Row("durable QoS 1 fan-in, greenfly fsync=always", "durable", "rate",
        greenfly_at_least(20_000, "msgs/s"), "always", "persistence"),
]


def round2_lines(runs: list[Run], args: argparse.Namespace) -> list[str]:
    """Issue 17's table as measured, then the round-1 ratios it must keep."""
    present = {r.scenario for r in runs}
    lines: list[str] = []
    rows = round2_rows(args)
    if present & {row.scenario for row in rows}:
        lines += ["## Issue 17 (performance, round 2): its table, measured", ""]
        lines += table(runs, rows, with_goals=True)
        lines += [""]
    if present & {row.scenario for row in ROUND1_ROWS}:
        lines += ["## No round-1 ratio falls (floors: issue 17's round-1 figures)", ""]
        lines += table(runs, ROUND1_ROWS, with_goals=True)
        lines += [""]
    return lines


def values(runs: list[Run], scenario: str, broker: str, variant: str, key: str) -> list[float]:
    return [r.metrics[key] for r in runs if r.scenario == scenario and r.broker == broker
            and r.variant == variant and r.ok and key in r.metrics]


def fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def cell(vals: list[float], digits: int) -> str:
    if not vals:
        return "-"
    med = statistics.median(vals)
    if len(vals) == 1:
        return fmt(med, digits)
    return f"{fmt(med, digits)} ({fmt(min(vals), digits)}-{fmt(max(vals), digits)})"


def table(runs: list[Run], rows: list[Row], with_goals: bool) -> list[str]:
    head = "| scenario | greenfly median (min-max) | Mosquitto median (min-max) | ratio gf/mq |"
    sep = "|---|---:|---:|---:|"
    if with_goals:
        head += " goal | met |"
        sep += "---|---|"
    lines = [head, sep]
    present = {r.scenario for r in runs}
    for row in rows:
        if row.scenario not in present:
            continue
        gf = values(runs, row.scenario, "greenfly", row.gf_variant, row.key)
        mq = values(runs, row.scenario, "mosquitto", row.mq_variant, row.key)
        gmed = statistics.median(gf) if gf else None
        mmed = statistics.median(mq) if mq else None
        ratio = gmed / mmed if gmed is not None and mmed else None
        line = (f"| {row.label} | {cell(gf, row.digits)} | {cell(mq, row.digits)} | "
                f"{fmt(ratio, 2)} |")
        if with_goals:
            met = row.goal.check(gmed, ratio) if row.goal else None
            line += (f" {row.goal.text if row.goal else '-'} | "
                     f"{'-' if met is None else 'yes' if met else 'NO'} |")
        lines.append(line)
    return lines


PACED = {"latency"}  # scenarios where the broker idles between messages


def health(runs: list[Run], names: list[str]) -> list[str]:
    lines = ["| scenario | broker | runs ok | broker's CPU busy while measured (anyone), "
             "median % | load generator CPU, max % of a core | other processes' CPU on the "
             "2 cores, median (max) % | softirq on the 2 cores, median % | "
             "broker peak RSS, max MiB | lost / reordered / duplicated, all runs |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for name in names:
        for broker in BROKERS:
            mine = [r for r in runs if r.scenario == name and r.broker == broker]
            if not mine:
                continue
            lg = [r.loadgen_cpu_pct for r in mine if r.loadgen_cpu_pct is not None]
            other = [r.other_cpu_pct for r in mine if r.other_cpu_pct is not None]
            hwm = [r.broker_hwm_kib for r in mine if r.broker_hwm_kib]
            noise = (f"{fmt(statistics.median(other), 0)} ({fmt(max(other), 0)})"
                     if other else "-")
            soft = [r.softirq_pct for r in mine if r.softirq_pct is not None]
            # CPU accounting is tick-sampled: only meaningful while the broker is saturated
            core = [r.broker_core_pct for r in mine
                    if r.broker_core_pct is not None and name not in PACED]
            lines.append(
                f"| {name} | {broker} | {sum(r.ok for r in mine)}/{len(mine)} | "
                f"{fmt(statistics.median(core), 0) if core else '-'} | "
                f"{fmt(max(lg), 0) if lg else '-'} | {noise} | "
                f"{fmt(statistics.median(soft), 0) if soft else '-'} | "
                f"{fmt(max(hwm) / 1024, 0) if hwm else '-'} | {checked(mine)} |")
    return lines


def checked(runs: list[Run]) -> str:
    """What the sequence checker counted over these runs ('-' where nothing was checked)."""
    reports = [rep for r in runs for rep in r.raw if "losses" in rep]
    if not reports:
        return "-"
    return " / ".join(str(sum(rep.get(k, 0) for rep in reports))
                      for k in ("losses", "reorders", "duplicates"))


V5_PAIRS = (("QoS 0 fan-in", "fanin_qos0"), ("QoS 0 fan-out", "fanout_qos0"),
            ("QoS 1 fan-in", "fanin_qos1"))


def derived(runs: list[Run]) -> list[str]:
    out = []
    for broker in BROKERS:
        for label, v3 in V5_PAIRS:
            # The MQTT 5 path against the same broker's 3.1.1 one (issue 12: at most 10 % more)
            v3_cost = values(runs, v3, broker, "", "cpu_us_per_msg")
            v5_cost = values(runs, f"{v3}_v5", broker, "", "cpu_us_per_msg")
            v3_rate = values(runs, v3, broker, "", "rate")
            v5_rate = values(runs, f"{v3}_v5", broker, "", "rate")
            if v3_cost and v5_cost and v3_rate and v5_rate:
                out.append(
                    f"- {broker}: MQTT 5 {label} delivers "
                    f"{statistics.median(v5_rate) / statistics.median(v3_rate):.2f}x the 3.1.1 "
                    f"rate; broker CPU per message v5/3.1.1 = "
                    f"{statistics.median(v5_cost) / statistics.median(v3_cost):.2f}x "
                    "(issue 12 wants <= 1.10x)")
    for broker in BROKERS:
        tcp = values(runs, "fanin_qos0", broker, "", "rate")
        ws = values(runs, "ws_fanin_qos0", broker, "", "rate")
        tcp_cost = values(runs, "fanin_qos0", broker, "", "cpu_us_per_msg")
        ws_cost = values(runs, "ws_fanin_qos0", broker, "", "cpu_us_per_msg")
        if tcp and ws and tcp_cost and ws_cost:
            rate_ratio = statistics.median(ws) / statistics.median(tcp)
            out.append(
                f"- {broker}: WebSocket fan-in delivers {rate_ratio:.2f}x "
                f"the TCP rate; broker CPU per message WebSocket/TCP = "
                f"{statistics.median(ws_cost) / statistics.median(tcp_cost):.2f}x "
                "(issue 3 wants <= 1.5x)")
    return out


def machine() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    version = "not installed"
    if MOSQUITTO.exists():
        mosq = subprocess.run([str(MOSQUITTO), "-h"], capture_output=True, text=True,
                              timeout=10)
        version = (mosq.stdout + mosq.stderr + "?").splitlines()[0]
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "broker"],
                           capture_output=True, text=True).stdout.strip()
    return {
        "date": datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cpus": str(os.cpu_count()),
        "cpu model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mosquitto": version,
        "greenfly": head + (" + uncommitted changes under broker/" if dirty else ""),
        "load average at start": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }



def report_lines(runs: list[Run], args: argparse.Namespace, info: dict[str, str],
                 elapsed: float) -> list[str]:
    lines = ["# greenfly vs Mosquitto", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += [f"- repetitions: {args.reps}, measured {args.duration:g} s after {args.warmup:g} s "
              f"warm-up per flow run, 64-byte payloads, loopback; QoS 0 publishers at most "
              f"{args.max_lead} messages ahead of their slowest subscriber; "
              f"whole run {elapsed / 60:.1f} min", ""]
    lines += round2_lines(runs, args)
    lines += ["## Every figure (issue 7's goals)", ""]
    lines += table(runs, ROWS, with_goals=True)
    lines += ["", "Broker CPU per unit of work: the broker process's utime+stime from /proc "
              "(steadier than rates when other work shares the machine); and all busy time "
              "of the broker's CPU per message, which adds the loopback network work the "
              "broker causes in softirq (charged to no process; large for a broker that "
              "sends one TCP segment per message) but also anything else that ran there "
              "(an upper bound):", ""]
    lines += table(runs, COST_ROWS, with_goals=False)
    extra = derived(runs)
    if extra:
        lines += ["", *extra]
    lines += ["", "Run health:", ""]
    lines += health(runs, args.names)
    failed = [r for r in runs if not r.ok]
    if failed:
        lines += ["", "Failed runs (not counted in the figures above):", ""]
        lines += [f"- {r.scenario} {r.variant} {r.broker} rep {r.rep}: {r.error}" for r in failed]
    issues: dict[tuple[str, str], dict[str, int]] = {}
    for r in runs:
        for issue in r.log_issues:
            key = re.sub(r"\d+", "N", issue)
            issues.setdefault((r.broker, r.scenario), {}).setdefault(key, 0)
            issues[(r.broker, r.scenario)][key] += 1
    if issues:
        lines += ["", "Broker log warnings and errors (digits folded to N; count):", ""]
        for (broker, scenario), found in sorted(issues.items()):
            for text, count in sorted(found.items(), key=lambda kv: -kv[1])[:5]:
                lines.append(f"- {broker} / {scenario}: {count}x `{text}`")
    return lines


"""The benchmark scenarios and how one run of them is measured (bench/run.py runs them).

It exists to say what each scenario does to a broker: a Scenario starts its brokers through
Context, drives them with the C load generator (bench/build/loadgen) pinned to its own CPU,
and returns Run records holding the metrics, the CPU accounting and anything that went wrong.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from brokers import Broker, BrokerOptions
from procs import (
    BENCH,
    BROKER_CPU,
    LOADGEN_CPU,
    REPO,
    MemorySampler,
    communicate,
    cpus_busy,
    proc_cpu,
    proc_status_kib,
    register,
)

LOADGEN = BENCH / "build" / "loadgen"
V5 = ["--protocol-level", "5"]


# -- one run ----------------------------------------------------------------------------------

@dataclass
class Run:
    scenario: str
    broker: str
    rep: int
    variant: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    loadgen_cpu_pct: float | None = None
    other_cpu_pct: float | None = None
    softirq_pct: float | None = None
    broker_core_pct: float | None = None  # how busy the broker's CPU was, whoever used it
    ok: bool = True
    error: str = ""
    log_issues: list[str] = field(default_factory=list)
    broker_hwm_kib: int | None = None
    raw: list[dict] = field(default_factory=list)


class Context:
    def __init__(self, args: argparse.Namespace, workroot: Path) -> None:
        self.args = args
        self.workroot = workroot
        self.pin = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
        self.count = 0
        self.core_args = ["--broker-core", str(BROKER_CPU)] if self.pin else []

    def broker(self, kind: str, options: BrokerOptions | None = None) -> Broker:
        self.count += 1
        return Broker(kind, self.workroot / f"{self.count:03d}-{kind}",
                      options or BrokerOptions(), self.pin, self.args.nice)

    def loadgen_command(self, args: list[str]) -> list[str]:
        cmd = [str(LOADGEN), *args]
        if self.pin:
            cmd = ["taskset", "-c", str(LOADGEN_CPU), *cmd]
        return cmd

    def loadgen(self, run: Run, broker: Broker, args: list[str], timeout: float) -> dict:
        """Run the load generator to completion against a live broker; fold in its report."""
        cpus = (BROKER_CPU, LOADGEN_CPU) if self.pin else tuple(range(os.cpu_count() or 1))
        busy0, bcpu0, t0 = cpus_busy(cpus), proc_cpu(broker.pid), time.monotonic()
        nice = self.args.nice
        proc = register(subprocess.Popen(
            self.loadgen_command([*args, "--broker-pid", str(broker.pid), *self.core_args]),
            cwd=REPO,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            text=True, preexec_fn=(lambda: os.nice(nice)) if nice else None))
        out, err, timed_out = communicate(proc, timeout)
        if timed_out:
            run.ok = False
            run.error = f"load generator timed out after {timeout:.0f} s"
        wall = time.monotonic() - t0
        result = parse_report(out)
        run.raw.append(result)
        if result.get("loadgen_cpu_s") is not None and broker.alive():
            busy1 = cpus_busy(cpus)
            other = busy1[0] - busy0[0] - (proc_cpu(broker.pid) - bcpu0)
            other -= result["loadgen_cpu_s"]
            pct = max(0.0, 100 * other / wall)
            run.other_cpu_pct = max(run.other_cpu_pct or 0.0, pct)
            run.softirq_pct = max(run.softirq_pct or 0.0, 100 * (busy1[1] - busy0[1]) / wall)
        if result.get("broker_core_busy_pct") is not None:
            run.broker_core_pct = result["broker_core_busy_pct"]
        if result.get("loadgen_cpu_pct") is not None:
            run.loadgen_cpu_pct = max(run.loadgen_cpu_pct or 0.0, result["loadgen_cpu_pct"])
        if proc.returncode != 0 and run.ok:
            run.ok = False
            failures = [line for line in err.splitlines() if "loadgen:" in line]
            run.error = "; ".join(failures[:3]) or f"load generator exited {proc.returncode}"
        if not broker.alive():
            run.ok = False
            run.error = (run.error + "; " if run.error else "") + (
                f"{broker.kind} died (exit {broker.proc.returncode if broker.proc else '?'})")
        return result

    def finish(self, run: Run, *brokers: Broker) -> None:
        for broker in brokers:
            if broker.alive():
                run.broker_hwm_kib = proc_status_kib(broker.pid, "VmHWM")
            status = broker.stop()
            if status not in (0, None, -signal.SIGTERM, -signal.SIGKILL):
                run.log_issues.append(f"{broker.kind} exited with status {status} on SIGTERM")
            run.log_issues.extend(broker.log_issues())


def parse_report(out: str) -> dict:
    for line in reversed(out.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                return json.loads(line)
    return {}


# -- scenarios ------------------------------------------------------------------------------

@dataclass
class Scenario:
    name: str
    title: str
    run: Callable[[Context, str, int], list[Run]]


def flow_metrics(result: dict, latency: bool = False) -> dict[str, float]:
    """Rate and CPU per message; latency percentiles only for paced runs (in unpaced ones
    they measure the publishers' lead, not the broker)."""
    metrics: dict[str, float] = {}
    rate = result.get("rate") or 0.0
    if rate:
        metrics["rate"] = rate
    lat = result.get("lat_us") or {}
    for key in ("p50", "p99", "p999"):
        if latency and lat.get("n") and key in lat:
            metrics[key] = lat[key]
    if rate and result.get("broker_cpu_pct") is not None:
        metrics["cpu_us_per_msg"] = result["broker_cpu_pct"] / 100 / rate * 1e6
    if rate and result.get("broker_core_busy_pct") is not None:
        # everything that ran on the broker's CPU: its process, the loopback network work it
        # caused in softirq (charged to no process), and anything else that ran there
        metrics["core_us_per_msg"] = result["broker_core_busy_pct"] / 100 / rate * 1e6
    return metrics


def timing(args: argparse.Namespace) -> list[str]:
    return ["--duration", str(args.duration), "--warmup", str(args.warmup)]


def flow_scenario(name: str, title: str, loadgen_args: list[str], *, ws: bool = False,
                  lead: bool = True) -> Scenario:
    """A flow through one fresh broker (fsync never, no Mosquitto persistence)."""

    def run(ctx: Context, kind: str, rep: int) -> list[Run]:
        result = Run(name, kind, rep)
        broker = ctx.broker(kind).start()
        try:
            port = broker.ws_port if ws else broker.tcp_port
            args = ["--port", str(port), *(["--ws"] if ws else []), *timing(ctx.args),
                    *loadgen_args]
            if lead:
                args += ["--max-lead", str(ctx.args.max_lead)]
            report = ctx.loadgen(result, broker, args, timeout=ctx.args.duration * 4 + 90)
            result.metrics = flow_metrics(report, latency="--rate" in loadgen_args)
        finally:
            ctx.finish(result, broker)
        return [result]

    return Scenario(name, title, run)


def durable_run(ctx: Context, kind: str, rep: int) -> list[Run]:
    """QoS 1 fan-in to a persistent subscriber: greenfly per fsync mode, Mosquitto once."""
    variants = (("always", "interval", "never") if kind == "greenfly" else ("persistence",))
    runs = []
    for variant in variants:
        result = Run("durable", kind, rep, variant)
        options = (BrokerOptions(fsync=variant) if kind == "greenfly"
                   else BrokerOptions(persistence=True))
        broker = ctx.broker(kind, options).start()
        try:
            args = ["--port", str(broker.tcp_port), *timing(ctx.args), "--pubs", "10",
                    "--subs", "1", "--qos", "1", "--window", "100", "--sub-clean", "0"]
            report = ctx.loadgen(result, broker, args, timeout=ctx.args.duration * 4 + 90)
            result.metrics = flow_metrics(report)
        finally:
            ctx.finish(result, broker)
        runs.append(result)
    return runs


def idle_run(ctx: Context, kind: str, rep: int) -> list[Run]:
    result = Run("idle", kind, rep)
    broker = ctx.broker(kind).start()
    try:
        args = ["--port", str(broker.tcp_port), "--mode", "idle", "--conns",
                str(ctx.args.conns), "--keepalive", "30", "--parallel", "100", "--hold",
                str(ctx.args.hold), "--timeout", "240"]
        report = ctx.loadgen(result, broker, args, timeout=300)
        for key in ("kib_per_conn", "connects_per_s", "broker_cpu_us_per_connect"):
            if report.get(key) is not None:
                result.metrics[key] = report[key]
    finally:
        ctx.finish(result, broker)
    return [result]


def restart_run(ctx: Context, kind: str, rep: int) -> list[Run]:
    """Queue messages for offline persistent sessions, kill -9 (Mosquitto: SIGTERM, which
    saves its database; after kill -9 it has nothing), restart, time it, drain everything.

    greenfly runs with fsync = "always": under "interval" and "never" it acknowledges before
    the journal write, so a kill -9 right after the last PUBACK loses messages."""
    result = Run("restart", kind, rep)
    sessions, per_session = ctx.args.sessions, ctx.args.per_session
    tag = secrets.token_hex(3)
    options = BrokerOptions(fsync="always", persistence=True)
    broker = ctx.broker(kind, options)
    try:
        broker.start()
        result.metrics["cold_ms"] = (broker.ready_at - broker.started_at) * 1000
        fill = ctx.loadgen(result, broker, [
            "--port", str(broker.tcp_port), "--mode", "fill", "--sessions", str(sessions),
            "--per-session", str(per_session), "--pubs", "10", "--window", "100",
            "--tag", tag, "--timeout", "120", "--drain-timeout", "120"], timeout=400)
        if fill.get("rate"):
            result.metrics["fill_rate"] = fill["rate"]
        if not result.ok:
            return [result]
        # the live state the restart has to rebuild: what the broker holds before it goes,
        # read as the queued scenario reads it, past the fill's transient buffers
        time.sleep(SETTLE_S)  # a fixed wait past a known once-a-second trim, not a readiness guess
        live_kib = proc_status_kib(broker.pid, "VmRSS")
        if live_kib:
            result.metrics["live_rss_mib"] = live_kib / 1024
        if kind == "greenfly":
            broker.kill9()
        else:
            broker.stop()
        # The drain side polls the port itself (every ms) and reports CLOCK_MONOTONIC times,
        # the clock time.monotonic() reads: start -> accept -> first message -> all.
        drain_cmd = ctx.loadgen_command([
            "--port", str(broker.tcp_port), "--mode", "drain", "--sessions", str(sessions),
            "--per-session", str(per_session), "--tag", tag, "--wait-port", "180",
            "--timeout", "180", "--drain-timeout", "240"])
        drain = register(subprocess.Popen(drain_cmd, cwd=REPO, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True,
                                          stdin=subprocess.DEVNULL))
        try:
            broker.start(wait=False)
        except BaseException:
            drain.kill()
            raise
        sampler = MemorySampler(broker.pid)
        sampler.start()
        try:
            out, err, timed_out = communicate(drain, 450)
        finally:
            sampler.stop()
        if timed_out:
            result.ok, result.error = False, "drain timed out"
        report = parse_report(out)
        result.raw.append(report)
        if drain.returncode != 0 and result.ok:
            result.ok = False
            result.error = "; ".join(line for line in err.splitlines() if "loadgen:" in line
                                     )[:500] or f"drain exited {drain.returncode}"
        if report.get("accept_at"):
            result.metrics["start_ms"] = (report["accept_at"] - broker.started_at) * 1000
        if report.get("first_msg_ms", -1) >= 0:
            result.metrics["first_ms"] = report["first_msg_ms"]
        if report.get("all_ms", -1) >= 0:
            result.metrics["all_s"] = report["all_ms"] / 1000
        restart_memory(result, sampler, report.get("accept_at"), live_kib)
        result.loadgen_cpu_pct = max(result.loadgen_cpu_pct or 0.0,
                                     report.get("loadgen_cpu_pct") or 0.0)
    finally:
        ctx.finish(result, broker)
    return [result]


def restart_memory(result: Run, sampler: MemorySampler, accept_at: float | None,
                   live_kib: int | None) -> None:
    """Peak RSS of the restarted process against the live state's RSS before the kill: up to
    the port accepting (the replay), and up to the last queued message delivered."""
    if not live_kib:
        return
    if accept_at:
        peak = sampler.peak_until(accept_at)
        if peak:
            result.metrics["restart_peak_mib"] = peak / 1024
            result.metrics["restart_peak_ratio"] = peak / live_kib
    peak = sampler.peak()
    if peak:
        result.metrics["drain_peak_mib"] = peak / 1024
        result.metrics["drain_peak_ratio"] = peak / live_kib


def queued_run(ctx: Context, kind: str, rep: int) -> list[Run]:
    """Broker RSS with QoS 1 messages queued for offline persistent sessions (issue 17:
    200,000 of 64 bytes): fill as the restart scenario does, with its persistence, and read
    VmRSS before and after. "After" is read SETTLE_S after the last PUBACK, past greenfly's
    once-a-second malloc_trim, so that it is the state held, not the fill's transient
    buffers; the read right after the fill is kept beside it (rss_filled_mb)."""
    result = Run("queued", kind, rep)
    sessions, per_session = ctx.args.queued_sessions, ctx.args.queued_per_session
    broker = ctx.broker(kind, BrokerOptions(fsync="always", persistence=True))
    try:
        broker.start()
        before = proc_status_kib(broker.pid, "VmRSS")
        fill = ctx.loadgen(result, broker, [
            "--port", str(broker.tcp_port), "--mode", "fill", "--sessions", str(sessions),
            "--per-session", str(per_session), "--pubs", "10", "--window", "100",
            "--tag", secrets.token_hex(3), "--timeout", "240", "--drain-timeout", "240"],
            timeout=600)
        if fill.get("rate"):
            result.metrics["fill_rate"] = fill["rate"]
        if not result.ok or not broker.alive():
            return [result]
        first = proc_status_kib(broker.pid, "VmRSS")
        time.sleep(SETTLE_S)  # a fixed wait past a known once-a-second trim, not a readiness guess
        settled = proc_status_kib(broker.pid, "VmRSS")
        if before and first:
            result.metrics["rss_filled_mb"] = first * 1024 / 1e6
        if before and settled:
            after = settled
            result.metrics["rss_before_mb"] = before * 1024 / 1e6
            result.metrics["rss_after_mb"] = after * 1024 / 1e6
            result.metrics["rss_delta_mb"] = (after - before) * 1024 / 1e6
            result.metrics["bytes_per_msg"] = (after - before) * 1024 / (sessions * per_session)
        result.raw.append({"rss_before_kib": before, "rss_after_fill_kib": first,
                           "rss_settled_kib": settled})
    finally:
        ctx.finish(result, broker)
    return [result]


SETTLE_S = 1.5


def scenarios() -> list[Scenario]:
    return [
        flow_scenario("fanin_qos0", "QoS 0 fan-in, 10 publishers -> 1 subscriber",
                      ["--pubs", "10", "--subs", "1", "--qos", "0"]),
        flow_scenario("fanout_qos0", "QoS 0 fan-out, 1 publisher -> 100 subscribers",
                      ["--pubs", "1", "--subs", "100", "--qos", "0"]),
        flow_scenario("fanin_qos1", "QoS 1 fan-in, 10 publishers x window 100 -> 1",
                      ["--pubs", "10", "--subs", "1", "--qos", "1", "--window", "100"],
                      lead=False),
        flow_scenario("fanin_qos2", "QoS 2 fan-in, 10 publishers x window 100 -> 1",
                      ["--pubs", "10", "--subs", "1", "--qos", "2", "--window", "100"],
                      lead=False),
        flow_scenario("latency", "latency at 2,000 msg/s, QoS 0, 1 -> 1",
                      ["--pubs", "1", "--subs", "1", "--qos", "0", "--rate", "2000"],
                      lead=False),
        Scenario("idle", "10,000 idle connections, keepalive 30", idle_run),
        flow_scenario("ws_fanin_qos0", "QoS 0 fan-in over WebSockets, 10 -> 1",
                      ["--pubs", "10", "--subs", "1", "--qos", "0"], ws=True),
        # MQTT 5 as MQTT.js sends it with no properties (level 5, property length 0): the
        # same flows as above, to compare each broker's v5 path with its own 3.1.1 one.
        flow_scenario("fanin_qos0_v5", "MQTT 5 QoS 0 fan-in, 10 publishers -> 1 subscriber",
                      ["--pubs", "10", "--subs", "1", "--qos", "0", *V5]),
        flow_scenario("fanout_qos0_v5", "MQTT 5 QoS 0 fan-out, 1 publisher -> 100 subscribers",
                      ["--pubs", "1", "--subs", "100", "--qos", "0", *V5]),
        flow_scenario("fanin_qos1_v5", "MQTT 5 QoS 1 fan-in, 10 publishers x window 100 -> 1",
                      ["--pubs", "10", "--subs", "1", "--qos", "1", "--window", "100", *V5],
                      lead=False),
        Scenario("durable", "QoS 1 fan-in 10 x 100 -> persistent subscriber", durable_run),
        Scenario("restart", "restart with 100,000 queued messages in 1,000 sessions",
                 restart_run),
        Scenario("queued", "RSS with 200,000 QoS 1 messages queued for 2,000 offline sessions",
                 queued_run),
    ]


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
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
LOADGEN = BENCH / "build" / "loadgen"
RESULTS = BENCH / "results"
MOSQUITTO = Path("/usr/sbin/mosquitto")
BROKER_CPU, LOADGEN_CPU = 0, 1
NOFILE = 20_000          # file descriptors for 10,000 connections, with room to spare
START_TIMEOUT = 60.0     # seconds for a broker to listen (a restart replays its journal)
STOP_TIMEOUT = 15.0      # seconds after SIGTERM before SIGKILL
BROKERS = ("greenfly", "mosquitto")

LIVE: dict[int, subprocess.Popen] = {}   # every process we started and have not reaped


# -- processes ------------------------------------------------------------------------------

def register(proc: subprocess.Popen) -> subprocess.Popen:
    LIVE[proc.pid] = proc
    return proc


def reap(proc: subprocess.Popen) -> None:
    LIVE.pop(proc.pid, None)


def kill_everything() -> None:
    """The last line of defence: SIGKILL, by PID, whatever we started that still runs."""
    for pid, proc in list(LIVE.items()):
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        LIVE.pop(pid, None)


def communicate(proc: subprocess.Popen, timeout: float) -> tuple[str, str, bool]:
    """(stdout, stderr, timed out) of a child we started; killed by PID on a timeout or on
    any exception (Ctrl-C), and forgotten once it has exited."""
    try:
        out, err = proc.communicate(timeout=timeout)
        return out, err, False
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return out, err, True
    except BaseException:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        raise
    finally:
        if proc.poll() is not None:
            reap(proc)


def on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def raise_nofile(want: int = NOFILE) -> int:
    """Raise RLIMIT_NOFILE for us and (inherited) for every broker and load generator."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def proc_cpu(pid: int) -> float:
    """utime + stime of a process in seconds (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status_kib(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def cpus_busy(cpus: tuple[int, ...]) -> tuple[float, float]:
    """(busy seconds but softirq, softirq seconds) summed over the given CPUs; busy is all
    but idle and iowait. Softirq is mostly the loopback network work of both sides."""
    busy = softirq = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name in {f"cpu{c}" for c in cpus}:
            v = [int(x) for x in values]  # user nice system idle iowait irq softirq steal
            busy += sum(v[:8]) - v[3] - v[4] - v[6]
            softirq += v[6]
    tick = os.sysconf("SC_CLK_TCK")
    return busy / tick, softirq / tick


# -- brokers --------------------------------------------------------------------------------

@dataclass
class BrokerOptions:
    fsync: str = "never"          # greenfly [persistence] fsync
    persistence: bool = False     # mosquitto: persistence true (saved on exit only)


class Broker:
    """One broker process: its config in a fresh directory, its log, free ports."""

    def __init__(self, kind: str, workdir: Path, options: BrokerOptions, pin: bool,
                 nice: int) -> None:
        self.kind = kind
        self.workdir = workdir
        self.options = options
        self.pin = pin
        self.nice = nice
        self.tcp_port = free_port()
        self.ws_port = free_port()
        self.log_path = workdir / f"{kind}.log"
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.ready_at = 0.0
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self._write_config()

    def _write_config(self) -> Path:
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        if self.kind == "greenfly":
            path = self.workdir / "greenfly.toml"
            path.write_text(
                f'[broker]\ndata_dir = "{data}"\nsys_interval = 0\n\n'
                "[limits]\nmax_inflight_messages = 0\nmax_queued_messages = 0\n"
                "max_queued_bytes = 0\n\n"
                f'[persistence]\nenabled = true\nfsync = "{self.options.fsync}"\n\n'
                f'[[listener]]\nbind = "127.0.0.1"\nport = {self.tcp_port}\nprotocol = "mqtt"\n\n'
                f'[[listener]]\nbind = "127.0.0.1"\nport = {self.ws_port}\n'
                'protocol = "websockets"\npath = "/mqtt"\n\n[log]\nlevel = "warning"\n')
            return path
        path = self.workdir / "mosquitto.conf"
        persistence = (f"persistence true\npersistence_location {data}/\nautosave_interval 0\n"
                       if self.options.persistence else "persistence false\n")
        path.write_text(
            "# no drops: unlimited queues and in-flight windows, no connection limit\n"
            "user root\nper_listener_settings false\nallow_anonymous true\n"
            "max_queued_messages 0\nmax_inflight_messages 0\nmax_queued_bytes 0\n"
            "set_tcp_nodelay true\nsys_interval 0\n" + persistence +
            "log_dest stderr\nlog_type error\nlog_type warning\nconnection_messages false\n"
            f"listener {self.tcp_port} 127.0.0.1\nmax_connections -1\n"
            f"listener {self.ws_port} 127.0.0.1\nprotocol websockets\nmax_connections -1\n")
        return path

    def command(self) -> list[str]:
        if self.kind == "greenfly":
            python = REPO / ".venv" / "bin" / "python"
            cmd = [str(python if python.exists() else sys.executable), "-m", "broker",
                   "-c", str(self.config_path)]
        else:
            cmd = [str(MOSQUITTO), "-c", str(self.config_path)]
        if self.pin:
            cmd = ["taskset", "-c", str(BROKER_CPU), *cmd]
        return cmd

    def start(self, wait: bool = True) -> Broker:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        nice = self.nice
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.started_at = time.monotonic()
        self.proc = register(subprocess.Popen(
            self.command(), cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env,
            stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=(lambda: os.nice(nice)) if nice else None))
        log.close()
        if wait:
            self.wait_listening()
        return self

    def wait_listening(self, timeout: float = START_TIMEOUT) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        for port in (self.tcp_port, self.ws_port):
            while not port_accepts(port):
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.kind} exited with {self.proc.returncode} before "
                                       f"listening:\n{self.log_tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.kind} not listening on {port} after "
                                       f"{timeout:.0f} s:\n{self.log_tail()}")
                time.sleep(0.002)
            if port == self.tcp_port:
                self.ready_at = time.monotonic()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT; returns the exit status."""
        proc = self.proc
        if proc is None:
            return None
        try:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    print(f"  {self.kind} (pid {proc.pid}) ignored SIGTERM for "
                          f"{STOP_TIMEOUT:.0f} s; killed", file=sys.stderr)
                    proc.kill()
                    proc.wait(10)
            return proc.returncode
        finally:
            reap(proc)

    def kill9(self) -> None:
        proc = self.proc
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        reap(proc)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def log_issues(self) -> list[str]:
        """Warnings, errors and tracebacks in the log, timestamps stripped."""
        found = []
        for line in self.log_text().splitlines():
            if "should not be run as root" in line:  # Mosquitto runs as root here on purpose
                continue
            if re.search(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback|Error:|Warning:", line):
                found.append(re.sub(r"^[\d\-: ,.]+", "", line).strip()[:200])
        return found


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
    for key in ("p50", "p99"):
        if latency and lat.get("n"):
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
        out, err, timed_out = communicate(drain, 450)
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
        result.loadgen_cpu_pct = max(result.loadgen_cpu_pct or 0.0,
                                     report.get("loadgen_cpu_pct") or 0.0)
    finally:
        ctx.finish(result, broker)
    return [result]


def scenarios() -> list[Scenario]:
    return [
        flow_scenario("fanin_qos0", "QoS 0 fan-in, 10 publishers -> 1 subscriber",
                      ["--pubs", "10", "--subs", "1", "--qos", "0"]),
        flow_scenario("fanout_qos0", "QoS 0 fan-out, 1 publisher -> 100 subscribers",
                      ["--pubs", "1", "--subs", "100", "--qos", "0"]),
        flow_scenario("fanin_qos1", "QoS 1 fan-in, 10 publishers x window 100 -> 1",
                      ["--pubs", "10", "--subs", "1", "--qos", "1", "--window", "100"],
                      lead=False),
        flow_scenario("latency", "latency at 2,000 msg/s, QoS 0, 1 -> 1",
                      ["--pubs", "1", "--subs", "1", "--qos", "0", "--rate", "2000"],
                      lead=False),
        Scenario("idle", "10,000 idle connections, keepalive 30", idle_run),
        flow_scenario("ws_fanin_qos0", "QoS 0 fan-in over WebSockets, 10 -> 1",
                      ["--pubs", "10", "--subs", "1", "--qos", "0"], ws=True),
        Scenario("durable", "QoS 1 fan-in 10 x 100 -> persistent subscriber", durable_run),
        Scenario("restart", "restart with 100,000 queued messages in 1,000 sessions",
                 restart_run),
    ]


# -- the table ------------------------------------------------------------------------------

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
    Row("latency at 2,000 msg/s QoS 0: p50 us", "latency", "p50", ratio_at_most(1.5)),
    Row("latency at 2,000 msg/s QoS 0: p99 us", "latency", "p99", ratio_at_most(2.0)),
    Row("10,000 idle connections: KiB per connection", "idle", "kib_per_conn",
        greenfly_at_most(4, "KiB"), digits=2),
    Row("connects/s while opening them", "idle", "connects_per_s", ratio_at_least(0.5)),
    Row("QoS 0 fan-in over WebSockets, delivered msgs/s", "ws_fanin_qos0", "rate",
        ratio_at_least(0.4)),
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
    Row("WebSocket QoS 0 fan-in, us per delivered msg", "ws_fanin_qos0", "cpu_us_per_msg",
        digits=2),
    Row("... all work on the broker's CPU", "ws_fanin_qos0", "core_us_per_msg", digits=2),
    Row("durable, greenfly fsync=always, us per msg", "durable", "cpu_us_per_msg", None,
        "always", "persistence", digits=2),
    Row("idle: us per connect", "idle", "broker_cpu_us_per_connect", digits=1),
]


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


def derived(runs: list[Run]) -> list[str]:
    out = []
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


def report_lines(runs: list[Run], args: argparse.Namespace, info: dict[str, str],
                 elapsed: float) -> list[str]:
    lines = ["# greenfly vs Mosquitto", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += [f"- repetitions: {args.reps}, measured {args.duration:g} s after {args.warmup:g} s "
              f"warm-up per flow run, 64-byte payloads, loopback; QoS 0 publishers at most "
              f"{args.max_lead} messages ahead of their slowest subscriber; "
              f"whole run {elapsed / 60:.1f} min", ""]
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


META_KEYS = ("reps", "duration", "warmup", "max_lead", "names", "broker_list", "conns",
             "sessions", "per_session", "nice")


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

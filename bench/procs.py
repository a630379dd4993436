"""Processes, ports and CPU accounting for the benchmark runner (bench/run.py).

It exists so that no broker or load generator outlives the runner: every child is registered
here by PID, and kill_everything() stops whatever still runs on any way out. The rest probes
loopback ports (readiness is a polled port, never a sleep) and reads /proc for the CPU time
of a process, of the CPUs, and a process's memory.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # the working directory of every child
BENCH = REPO / "bench"
BROKER_CPU, LOADGEN_CPU = 0, 1
NOFILE = 20_000          # file descriptors for 10,000 connections, with room to spare

LIVE: dict[int, subprocess.Popen] = {}   # every process we started and have not reaped


def register(proc: subprocess.Popen) -> subprocess.Popen:
    LIVE[proc.pid] = proc
    return proc


def reap(proc: subprocess.Popen) -> None:
    LIVE.pop(proc.pid, None)


def terminate(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it is still there after `grace` seconds; reaped either way."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    reap(proc)


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


class MemorySampler(threading.Thread):
    """Reads a process's VmRSS and VmHWM every `interval` s until stopped, with the time of
    each read (time.monotonic, the clock the load generator's CLOCK_MONOTONIC reports use),
    so that the peak up to a moment reported later (the port accepting) can be picked out.
    VmHWM is the kernel's own peak of VmRSS, so nothing between two reads is missed."""

    def __init__(self, pid: int, interval: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int, int]] = []   # (when, VmRSS KiB, VmHWM KiB)
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            rss = proc_status_kib(self.pid, "VmRSS")
            hwm = proc_status_kib(self.pid, "VmHWM")
            if rss is not None and hwm is not None:
                self.samples.append((time.monotonic(), rss, hwm))
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)

    def peak_until(self, moment: float) -> int | None:
        """VmHWM at the last read at or before `moment` (KiB): the peak up to then."""
        before = [hwm for when, _, hwm in self.samples if when <= moment]
        return before[-1] if before else None

    def peak(self) -> int | None:
        return self.samples[-1][2] if self.samples else None


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


"""One broker under test, greenfly or Mosquitto, for the benchmark runner (bench/run.py).

It exists to start both brokers alike: a config with no drops and the same limits in a fresh
directory, free loopback ports, pinned to the broker's CPU; then to wait for its ports, stop
it by PID (SIGTERM, then SIGKILL) and pick the warnings out of its log.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from procs import BROKER_CPU, REPO, free_port, port_accepts, reap, register

MOSQUITTO = Path("/usr/sbin/mosquitto")
START_TIMEOUT = 60.0     # seconds for a broker to listen (a restart replays its journal)
STOP_TIMEOUT = 15.0      # seconds after SIGTERM before SIGKILL
BROKERS = ("greenfly", "mosquitto")


@dataclass
class BrokerOptions:
    fsync: str = "never"          # greenfly [persistence] fsync
    persistence: bool = False     # mosquitto: persistence true (saved on exit only)
    extra: str = ""               # greenfly: more config appended (a [cluster] table)


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
                "max_queued_bytes = 0\nmax_outbox_bytes = 0\n\n"
                f'[persistence]\nenabled = true\nfsync = "{self.options.fsync}"\n\n'
                f'[[listener]]\nbind = "127.0.0.1"\nport = {self.tcp_port}\nprotocol = "mqtt"\n\n'
                f'[[listener]]\nbind = "127.0.0.1"\nport = {self.ws_port}\n'
                'protocol = "websockets"\npath = "/mqtt"\n\n[log]\nlevel = "warning"\n'
                + self.options.extra)
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


"""The real broker as a subprocess: its own config, a free loopback port, a temp data dir.

Tests talk to it over sockets only. `wait_for_log` waits on what the broker says (with a
timeout) instead of sleeping; `kill9` and `restart` reuse the same ports and data dir.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 15.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"broker exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


class BrokerProcess:
    """One greenfly process. `extra` is TOML appended to the generated config."""

    def __init__(self, workdir: Path, extra: str = "", *, sys_interval: int = 0,
                 websockets: bool = False, env: dict[str, str] | None = None,
                 config_text: str | None = None) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = workdir / "data"
        self.port = free_port()
        self.ws_port = free_port() if websockets else None
        self.config_path = workdir / "greenfly.toml"
        self.log_path = workdir / "broker.log"
        self.env = env
        self.proc: subprocess.Popen | None = None
        self._log_offset = 0
        if config_text is None:
            config_text = self._config(extra, sys_interval)
        self.config_path.write_text(config_text)

    def _config(self, extra: str, sys_interval: int) -> str:
        sections = {"broker": [f'data_dir = "{self.data_dir}"', f"sys_interval = {sys_interval}"]}
        body = extra
        # Keys the test gives for [broker] are merged into the generated [broker] table.
        match = re.search(r"^\[broker\]\n((?:[^\[].*\n?)*)", body, re.M)
        if match:
            sections["broker"].extend(line for line in match.group(1).splitlines() if line)
            body = body[:match.start()] + body[match.end():]
        text = "[broker]\n" + "\n".join(sections["broker"]) + "\n\n"
        text += f'[[listener]]\nbind = "127.0.0.1"\nport = {self.port}\nprotocol = "mqtt"\n\n'
        if self.ws_port:
            text += (f'[[listener]]\nbind = "127.0.0.1"\nport = {self.ws_port}\n'
                     'protocol = "websockets"\n\n')
        return text + body

    # -- life ----------------------------------------------------------------------------------

    def start(self, wait: bool = True) -> BrokerProcess:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        if self.env:
            env.update(self.env)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "broker", "-c", str(self.config_path)],
            cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        if wait:
            try:
                wait_for_port(self.port, START_TIMEOUT, self.proc)
                if self.ws_port:
                    wait_for_port(self.ws_port, START_TIMEOUT, self.proc)
            except Exception:
                self.stop()
                raise RuntimeError(f"broker did not start:\n{self.log_text()}") from None
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def restart(self) -> BrokerProcess:
        self.stop()
        return self.start()

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    # -- the log -------------------------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def mark_log(self) -> None:
        """Later `wait_for_log` calls only look at what the broker writes after this point."""
        self._log_offset = len(self.log_text())

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.log_text(), self._log_offset)
            if match:
                return match
            if time.monotonic() > deadline:
                tail = self.log_text()[-4000:]
                raise AssertionError(f"log never matched {pattern!r}; log:\n{tail}")
            time.sleep(0.02)

"""The real broker as a subprocess: its own config, loopback ports it picks itself, a temp
data dir.

Tests talk to it over sockets only. Its listeners bind port 0 and the test reads the ports
from the broker's `listening:` log lines (a port picked here and bound later by the broker
could be taken in between by a test running in parallel); after the first start the config
file names the real ports, so `restart`, `kill9` + `start`, a reload and `greenfly deploy -c`
all see the same ones. `wait_for_log` waits on what the broker says (with a timeout) instead
of sleeping.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 15.0
# "listening: mqtt on 127.0.0.1:41234; anonymous clients ..." (broker/server/listeners.py);
# websockets add " at /mqtt", http " (/metrics, ...". The host may be an IPv6 address: the port
# follows the last ':'.
LISTENING = re.compile(r"listening: (?P<scheme>mqtts?|wss?|https?) on \S+:(?P<port>\d+)(?=[ ;])")
PORT_LINE = re.compile(r"^port\s*=\s*(\d+)\s*$", re.M)


def listening(log: str) -> list[tuple[str, int]]:
    """(scheme, port) of every listener a broker's log says it opened, in order."""
    return [(match["scheme"], int(match["port"])) for match in LISTENING.finditer(log)]


def wait_for_listening(log: Path, count: int, *, after: int = 0, timeout: float = START_TIMEOUT,
                       proc: subprocess.Popen | None = None) -> list[tuple[str, int]]:
    """The first `count` listeners a broker logs past character `after` of its log file (a
    broker this test did not start itself: under supervisord, from install.sh)."""
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text(errors="replace") if log.exists() else ""
        opened = listening(text[after:])
        if len(opened) >= count:
            return opened[:count]
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"broker exited with {proc.returncode}:\n{text[-4000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{log} named {len(opened)} of {count} listeners after "
                               f"{timeout}s:\n{text[-4000:]}")
        time.sleep(0.02)


@contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections while the block runs: bound, so no test
    running in parallel can take it, but not listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def free_port() -> int:
    """A port nothing listens on right now, for servers that cannot tell which port they bound
    (nginx, mosquitto): another process may take it before they do, so prefer port 0."""
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
    """One greenfly process. `extra` is TOML appended to the generated config, whose listeners
    (mqtt, and websockets if asked) bind port 0; a `config_text` of the test's own may use
    port 0 too. `ports` lists (scheme, port) per listener once started; `port` and `ws_port`
    are the first mqtt and ws ones."""

    def __init__(self, workdir: Path, extra: str = "", *, sys_interval: int = 0,
                 websockets: bool = False, env: dict[str, str] | None = None,
                 config_text: str | None = None) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = workdir / "data"
        self.websockets = websockets
        self.ports: list[tuple[str, int]] = []
        self.config_path = workdir / "greenfly.toml"
        self.log_path = workdir / "broker.log"
        self.env = env
        self.proc: subprocess.Popen | None = None
        self._log_offset = 0
        self._start_offset = 0  # where the log of the current run begins
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
        text += '[[listener]]\nbind = "127.0.0.1"\nport = 0\nprotocol = "mqtt"\n\n'
        if self.websockets:
            text += '[[listener]]\nbind = "127.0.0.1"\nport = 0\nprotocol = "websockets"\n\n'
        return text + body

    # -- ports ---------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self.port_of("mqtt")

    @property
    def ws_port(self) -> int | None:
        return self.port_of("ws") if self.websockets else None

    def port_of(self, scheme: str, index: int = 0) -> int:
        """The port of the `index`-th listener of this scheme (mqtt, mqtts, ws, wss)."""
        if not self.ports:
            self._await_listening()
        found = [port for kind, port in self.ports if kind == scheme]
        if len(found) <= index:
            raise AssertionError(f"no {scheme} listener #{index}; listening on {self.ports}")
        return found[index]

    def _await_listening(self) -> None:
        """Wait until this run of the broker has logged a `listening:` line per listener."""
        assert self.proc is not None, "not started"
        config = tomllib.loads(self.config_path.read_text())
        try:
            self.ports = wait_for_listening(self.log_path, len(config.get("listener", [])),
                                            after=self._start_offset, proc=self.proc)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"broker did not start: {exc}") from None
        self._name_ports_in_config()

    def _name_ports_in_config(self) -> None:
        """Write the bound ports over the `port = 0` lines (the Nth `port` line is the Nth
        listener's: `port` is a key of [[listener]] only), so later runs keep them."""
        text = self.config_path.read_text()
        lines = list(PORT_LINE.finditer(text))
        if len(lines) != len(self.ports) or all(m[1] != "0" for m in lines):
            return
        for match, (_scheme, port) in reversed(list(zip(lines, self.ports, strict=True))):
            if match[1] == "0":
                text = text[:match.start()] + f"port = {port}" + text[match.end():]
        self.config_path.write_text(text)

    # -- life ----------------------------------------------------------------------------------

    def start(self, wait: bool = True) -> BrokerProcess:
        """Start the process; with `wait`, return once every listener is open (else the ports
        are read from the log when first asked for)."""
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        if self.env:
            env.update(self.env)
        self._start_offset = len(self.log_text())
        self.ports = []
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "broker", "-c", str(self.config_path)],
            cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        if wait:
            try:
                self._await_listening()
            except Exception:
                self.stop()
                raise
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

"""Debian's redis-server as a subprocess on a loopback port, durable the way the cluster
documents it (AOF, `appendfsync always`): started on a port picked first (redis-server's
`--port 0` means "no TCP"), stopped or killed by its PID, and started again on the same port
and directory, so that the restart replays the AOF and a test can see what survived."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from .broker import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT = 15.0


class RedisServer:
    """`url`, `port`, `pid` and `dir` are set once constructed (`pid` once started);
    `socket_path` is a unix socket beside the TCP port (in a short directory of its own: the
    tmp_path of a test can exceed the 107 bytes a socket path may have)."""

    def __init__(self, workdir: Path, port: int | None = None, args: tuple[str, ...] = ()) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.dir = workdir
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.socket_dir = Path(tempfile.mkdtemp(prefix="gf-redis-"))
        self.socket_path = str(self.socket_dir / "redis.sock")
        self.log_path = workdir / "redis.log"
        self.args = args
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None

    def command(self) -> list[str]:
        return [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.port),
                "--unixsocket", self.socket_path, "--unixsocketperm", "700",
                "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                "--dir", str(self.dir), "--daemonize", "no", "--logfile", str(self.log_path),
                *self.args]

    def start(self) -> RedisServer:
        """Start it and wait (bounded) until it answers PING, its AOF replayed."""
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pid = self.proc.pid
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}:\n"
                                   + self.log_tail())
            if self._pong():
                return self
            time.sleep(0.02)
        self.kill()
        raise TimeoutError(f"redis-server did not answer PING within {START_TIMEOUT}s:\n"
                           + self.log_tail())

    def _pong(self) -> bool:
        # -LOADING while the AOF replays: not ready yet; -NOAUTH (requirepass): ready.
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM (redis-server finishes its AOF writes and exits), then wait for it."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: what survives is only what the AOF had fsynced."""
        self._signal(signal.SIGKILL)

    def restart(self) -> RedisServer:
        """Start again on the same port and directory (the AOF is replayed)."""
        if self.running:
            self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _signal(self, signum: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signum)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def client(self, **kwargs: Any) -> Any:
        """A plain (blocking) redis-py client, for the tests' own assertions."""
        import redis

        kwargs.setdefault("socket_timeout", 10)
        return redis.Redis(host="127.0.0.1", port=self.port, db=0, **kwargs)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def close(self) -> None:
        """Stop it and remove the socket directory (the fixture's teardown)."""
        self.stop()
        shutil.rmtree(self.socket_dir, ignore_errors=True)

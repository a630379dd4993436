"""systemd's notification protocol (sd_notify) in plain Python: no libsystemd, no new dependency.

Why: with `Type=notify`, systemd (and anything ordered after greenfly.service) waits for the
broker to say it is ready instead of guessing from the process having started. The messages:
- `READY=1` once the store is restored and every listener accepts connections — never before,
  so a client started right after `systemctl start greenfly` finds its session and a port.
- `STOPPING=1` when a graceful stop begins (SIGTERM), so `systemctl status` says so while the
  connections close and the journal flushes.
- `RELOADING=1` with `MONOTONIC_USEC` (what systemd 253+ expects), then `READY=1`, around a
  SIGHUP reload; the READY=1 goes out even when the new configuration was rejected, because the
  broker goes on serving with the old one.
- `WATCHDOG=1` every `WATCHDOG_USEC / 2` when systemd asks for it (`WatchdogSec=`), from a
  greenlet: the pings stop when the hub is stuck, which is exactly when a restart helps.

`NOTIFY_SOCKET` is a datagram socket path, or an abstract one written with a leading '@'.
Without it (not under systemd, or under supervisord) every call does nothing. A lost
notification must never break the broker, so send errors are swallowed after one log line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

import gevent

log = logging.getLogger("greenfly")


class Notifier:
    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec
        self._failed = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        """The notifier systemd set up for this process, or a silent one."""
        address = environ.get("NOTIFY_SOCKET") or None
        watchdog_usec = None
        with contextlib.suppress(ValueError):
            usec = int(environ.get("WATCHDOG_USEC", ""))
            pid = environ.get("WATCHDOG_PID")
            # WATCHDOG_PID names the process the watchdog is for; a child that inherited the
            # variables must not ping on its parent's behalf.
            if usec > 0 and (not pid or pid == str(os.getpid())):
                watchdog_usec = usec
        return cls(address, watchdog_usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send `KEY=VALUE` lines as one datagram; True when it went out."""
        if self.address is None:
            return False
        target = self.address
        if target.startswith("@"):
            target = "\0" + target[1:]  # an abstract socket: no file behind it
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)  # never wait on systemd from the hub
                sock.sendto("\n".join(fields).encode(), target)
        except OSError as exc:
            if not self._failed:
                log.warning("cannot notify systemd on %s: %s", self.address, exc)
                self._failed = True
            return False
        return True

    def ready(self, status: str = "") -> list[gevent.Greenlet]:
        """READY=1; and the WATCHDOG=1 pinger when systemd asked for one (returned to be killed
        on stop, with the broker's other tasks)."""
        self.send("READY=1", *([f"STATUS={status}"] if status else []))
        if self.watchdog_usec is None or self.address is None:
            return []
        return [gevent.spawn(self._ping_watchdog, self.watchdog_usec / 2e6)]

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping: closing connections, flushing the journal")

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def around_reload(self, reload: Callable[[], None]) -> Callable[[], None]:
        """`reload` wrapped in RELOADING=1 ... READY=1 (READY=1 even if reload failed)."""
        def wrapped() -> None:
            self.reloading()
            try:
                reload()
            finally:
                self.send("READY=1")
        return wrapped

    def _ping_watchdog(self, interval: float) -> None:
        while True:
            self.send("WATCHDOG=1")
            gevent.sleep(interval)

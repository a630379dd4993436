"""`$SYS/broker/...`: Mosquitto's status topics, published every `sys_interval` seconds.

Values are retained QoS 0 messages published through the router (so `$SYS/#` subscribers
and late subscribers both see them) but never written to the store: they are recomputed
after every start. A value is republished only when it changed, except the uptime. Load
averages are exponentially damped per-minute rates over 1, 5 and 15 minutes, as Mosquitto's.
"""

from __future__ import annotations

import math
import os
import resource
import time

import gevent

from .. import __version__
from ..core.context import BrokerContext
from ..core.message import Message

PREFIX = "$SYS/broker/"

# load/<name> -> the Stats counter it is the rate of
LOAD_COUNTERS = {
    "messages/received": "messages_received",
    "messages/sent": "messages_sent",
    "publish/received": "publish_received",
    "publish/sent": "publish_sent",
    "publish/dropped": "publish_dropped",
    "bytes/received": "bytes_received",
    "bytes/sent": "bytes_sent",
    "sockets": "sockets_total",
    "connections": "connections_total",
}
WINDOWS = {"1min": 60.0, "5min": 300.0, "15min": 900.0}


class SysTopics:
    def __init__(self, ctx: BrokerContext) -> None:
        self.ctx = ctx
        self._last: dict[str, str] = {}
        self._loads: dict[tuple[str, str], float] = {}
        self._previous: dict[str, int] = {}
        self._previous_at = time.monotonic()
        self._greenlet: gevent.Greenlet | None = None
        self._heap_maximum = 0

    def start(self) -> None:
        if self.ctx.config.broker.sys_interval and self._greenlet is None:
            self.publish_all()
            self._greenlet = gevent.spawn(self._loop)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None

    def _loop(self) -> None:
        while True:
            interval = self.ctx.config.broker.sys_interval
            if not interval:
                self._greenlet = None
                return
            gevent.sleep(interval)
            self.publish_all()

    def values(self) -> dict[str, str]:
        """Every topic (below $SYS/broker/) and its current value."""
        ctx = self.ctx
        stats = ctx.stats
        registry = ctx.registry
        connected = stats.clients_connected
        offline = sum(1 for session in registry if session.peer is None)
        stored = ctx.retained.count + sum(session.owed() for session in registry)
        heap = _rss_bytes()
        # The kernel's peak (ru_maxrss) is updated lazily and can lag the resident size /proc
        # reports now, so the maximum is the largest of both ever seen, this sample included.
        self._heap_maximum = max(self._heap_maximum, heap,
                                 resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        values = {
            "version": f"greenfly version {__version__}",
            "uptime": f"{int(stats.uptime())} seconds",
            "clients/connected": connected,
            "clients/active": connected,
            "clients/disconnected": offline,
            "clients/inactive": offline,
            "clients/total": connected + offline,
            "clients/maximum": stats.clients_maximum,
            "clients/expired": stats.clients_expired,
            "subscriptions/count": ctx.tree.count,
            "shared_subscriptions/count": ctx.tree.shared_count,
            "retained messages/count": ctx.retained.count,
            "messages/stored": stored,
            "store/messages/count": stored,
            "store/messages/bytes": sum(len(m.payload) for m in ctx.retained.all()),
            "messages/received": stats.messages_received,
            "messages/sent": stats.messages_sent,
            "publish/messages/received": stats.publish_received,
            "publish/messages/sent": stats.publish_sent,
            "publish/messages/dropped": stats.publish_dropped,
            "publish/messages/expired": stats.publish_expired,
            "publish/bytes/received": stats.publish_bytes_received,
            "publish/bytes/sent": stats.publish_bytes_sent,
            "bytes/received": stats.bytes_received,
            "bytes/sent": stats.bytes_sent,
            # Mosquitto reports its heap; the closest a Python process has is its RSS.
            "heap/current": heap,
            "heap/maximum": self._heap_maximum,
        }
        values.update(self._load_values())
        return {topic: str(value) for topic, value in values.items()}

    def _load_values(self) -> dict[str, str]:
        now = time.monotonic()
        elapsed = max(now - self._previous_at, 1e-3)
        self._previous_at = now
        out = {}
        for name, counter in LOAD_COUNTERS.items():
            current = getattr(self.ctx.stats, counter)
            per_minute = (current - self._previous.get(name, current)) * 60.0 / elapsed
            self._previous[name] = current
            for window, seconds in WINDOWS.items():
                key = (name, window)
                damping = math.exp(-elapsed / seconds)
                load = self._loads.get(key, per_minute)
                load = per_minute + damping * (load - per_minute)
                self._loads[key] = load
                out[f"load/{name}/{window}"] = f"{load:.2f}"
        return out

    def publish_all(self) -> None:
        router = self.ctx.router
        for topic, value in self.values().items():
            if self._last.get(topic) == value and topic != "uptime":
                continue
            self._last[topic] = value
            router.publish(Message(PREFIX + topic, value.encode(), 0, True), persist=False)


def _rss_bytes() -> int:
    """Resident set size from /proc (Linux); 0 where there is no /proc."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0

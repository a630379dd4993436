"""The status page's numbers: now, and once a second for the last 15 minutes.

A greenlet (one per HTTP listener, only while it runs) copies a few counters into a ring of
`HISTORY` samples every `INTERVAL` seconds; `overview()` turns them into rates. A page opened
now shows the last 15 minutes, not only what it saw since it loaded, and a rate is the
difference of two samples the broker took, not of two page requests.
"""

from __future__ import annotations

import time
from collections import deque
from itertools import pairwise
from typing import Any

import gevent

from .metrics import drop_reasons, session_tally
from .runtime_view import Runtime

INTERVAL = 1.0
HISTORY = 900  # 15 minutes of one-second samples


class StatusHistory:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        # (wall time, publishes in, publishes out, drops, fsync count, fsync seconds)
        self.samples: deque[tuple[float, int, int, int, int, float]] = deque(maxlen=HISTORY)
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None

    def _run(self) -> None:
        while True:
            self.sample()
            gevent.sleep(INTERVAL)

    def sample(self) -> None:
        stats = self.runtime.ctx.stats
        times = getattr(self.runtime.store, "fsync_seconds", None)
        self.samples.append((time.time(), stats.publish_received, stats.publish_sent,
                             sum(drop_reasons(stats).values()),
                             times.count if times is not None else 0,
                             times.total if times is not None else 0.0))

    def overview(self) -> dict[str, Any]:
        """Everything the status page shows but the client table."""
        runtime = self.runtime
        ctx = runtime.ctx
        stats = ctx.stats
        online, offline, queued, inflight = session_tally(runtime)
        store = runtime.store
        samples = list(self.samples)
        rates = [(round(b[0], 1), _rate(a, b, 1), _rate(a, b, 2))
                 for a, b in pairwise(samples)]
        recent = samples[-11:]  # fsync latency over the last ten seconds
        fsyncs = recent[-1][4] - recent[0][4] if len(recent) > 1 else 0
        return {
            "uptime": round(stats.uptime(), 1),
            "clients_online": online,
            "clients_offline": offline,
            "clients_connected": stats.clients_connected,
            "messages_received": stats.publish_received,
            "messages_sent": stats.publish_sent,
            "dropped": drop_reasons(stats),
            "queued": queued,
            "inflight": inflight,
            "subscriptions": ctx.tree.count,
            "retained": ctx.retained.count,
            "journal_bytes": getattr(store, "size", None),
            "journal_failure": getattr(store, "failure", None),
            "fsync_avg_seconds": ((recent[-1][5] - recent[0][5]) / fsyncs) if fsyncs else None,
            "ready": not runtime.stopping and getattr(store, "failure", None) is None,
            # [wall time, received per second, sent per second], oldest first
            "rates": rates,
        }


def _rate(a: tuple[Any, ...], b: tuple[Any, ...], index: int) -> float:
    elapsed = b[0] - a[0]
    return round((b[index] - a[index]) / elapsed, 2) if elapsed > 0 else 0.0

"""`Stats`: the broker's counters, read by `$SYS` publishing, `/metrics` and `greenfly` tools.

Plain integer attributes, incremented in place on the hot path (one OS thread: no lock is
needed for `+=`). Rates and load averages are derived from these by `sys_topics`; the
Prometheus collector (server/metrics.py) reads these same attributes at each scrape, so there
is one set of counters. A counter named `publish_dropped_<reason>` is exported as that drop
reason without further wiring.
"""

from __future__ import annotations

import time


class Stats:
    __slots__ = ("started_at", "messages_received", "messages_sent", "publish_received",
                 "publish_sent", "publish_dropped", "publish_expired", "bytes_received",
                 "bytes_sent", "publish_bytes_received", "publish_bytes_sent", "clients_connected",
                 "clients_maximum", "clients_expired", "connections_total", "sockets_total",
                 "auth_failures", "disconnects")

    def __init__(self) -> None:
        self.started_at = time.monotonic()
        self.messages_received = 0  # every packet received
        self.messages_sent = 0  # every packet sent
        self.publish_received = 0  # PUBLISH packets received
        self.publish_sent = 0  # PUBLISH packets sent
        self.publish_dropped = 0  # messages dropped: full outbox, full queue, too large
        self.publish_expired = 0  # MQTT 5 messages not sent: their expiry interval passed
        self.bytes_received = 0
        self.bytes_sent = 0
        self.publish_bytes_received = 0  # payload bytes
        self.publish_bytes_sent = 0
        self.clients_connected = 0
        self.clients_maximum = 0
        self.clients_expired = 0  # persistent sessions discarded by persistent_client_expiration
        self.connections_total = 0  # CONNECTs accepted since start
        self.sockets_total = 0  # sockets accepted since start
        self.auth_failures = 0  # CONNECTs refused for their credentials
        self.disconnects: dict[str, int] = {}  # closed connections by kind of reason

    def uptime(self) -> float:
        return time.monotonic() - self.started_at

    def client_connected(self) -> None:
        self.clients_connected += 1
        self.connections_total += 1
        if self.clients_connected > self.clients_maximum:
            self.clients_maximum = self.clients_connected

    def client_disconnected(self) -> None:
        self.clients_connected -= 1

    def disconnected(self, kind: str) -> None:
        """A connection closed; `kind` is `CloseReason.kind` (client_disconnect, ...)."""
        self.disconnects[kind] = self.disconnects.get(kind, 0) + 1


# Upper bounds (seconds) of the fsync latency buckets: a disk's fsync runs from tens of
# microseconds (tmpfs, a write cache) to seconds (a busy spinning disk).
FSYNC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                 0.25, 0.5, 1.0, 2.5, 5.0)


class LatencyHistogram:
    """Counts of observed durations per bucket (not cumulative), their sum and count: what a
    Prometheus histogram needs, kept where the duration is measured (the journal writer)."""

    __slots__ = ("bounds", "counts", "total", "count")

    def __init__(self, bounds: tuple[float, ...] = FSYNC_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        index = 0
        for bound in self.bounds:
            if seconds <= bound:
                break
            index += 1
        self.counts[index] += 1
        self.total += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it), ending with (inf, count)."""
        out, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out

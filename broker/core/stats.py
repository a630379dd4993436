"""`Stats`: the broker's counters, read by `$SYS` publishing and `greenfly` diagnostics.

Plain integer attributes, incremented in place on the hot path (one OS thread: no lock is
needed for `+=`). Rates and load averages are derived from these by `sys_topics`.
"""

from __future__ import annotations

import time


class Stats:
    __slots__ = ("started_at", "messages_received", "messages_sent", "publish_received",
                 "publish_sent", "publish_dropped", "publish_expired", "bytes_received",
                 "bytes_sent", "publish_bytes_received", "publish_bytes_sent", "clients_connected",
                 "clients_maximum", "clients_expired", "connections_total", "sockets_total")

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

    def uptime(self) -> float:
        return time.monotonic() - self.started_at

    def client_connected(self) -> None:
        self.clients_connected += 1
        self.connections_total += 1
        if self.clients_connected > self.clients_maximum:
            self.clients_maximum = self.clients_connected

    def client_disconnected(self) -> None:
        self.clients_connected -= 1

"""`Peer`, what a session needs of its connection, and the outbox's `WaitDurable` marker.

Duck-typed so that core/ stays free of sockets: a `Connection` is one, a bridge link another,
the in-process test harness a third.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class Peer(Protocol):
    """The live end of a session: a connection's outbox (implemented by `Connection`)."""

    @property
    def protocol_level(self) -> int:
        """The MQTT level its client speaks (read only: the connection's protocol sets it)."""
        ...

    def put(self, item: Any) -> None:
        """Queue for the writer: wire bytes (a QoS 0 PUBLISH), a packet, a `WaitDurable`, or
        a `Delivery` (a QoS 1/2 PUBLISH)."""
        ...

    def offer(self, data: bytes) -> bool:
        """Queue a QoS 0 PUBLISH's wire bytes, unless the outbox is full: then False."""
        ...

    def terminate(self, reason: Any) -> None:
        """Close the connection now, from another greenlet (takeover)."""
        ...

    def produce(self, feed: Callable[[int], bool]) -> None:
        """Call `feed(budget)` whenever the outbox has room for about `budget` more bytes
        (and after each read), until it returns True: what is owed in bulk goes at the pace
        the client reads, after what feeds were given before."""
        ...


class WaitDurable:
    """Outbox marker: what follows may be written only once record `seq` is durable."""

    __slots__ = ("seq",)

    def __init__(self, seq: int) -> None:
        self.seq = seq

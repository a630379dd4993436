"""A session's or a protocol's peer that keeps what it is given in lists, for unit tests that
drive the state layer directly (without the in-process harness's connections)."""

from __future__ import annotations

from typing import Any


class RecordingPeer:
    """The `Peer` interface of broker/core/session.py: what is put or offered goes to `items`,
    terminations to `terminated`; a producer is drained at once."""

    def __init__(self, level: int = 4) -> None:
        self.protocol_level = level
        self.items: list[Any] = []
        self.terminated: list[Any] = []

    def put(self, item: Any) -> None:
        self.items.append(item)

    def offer(self, data: bytes) -> bool:
        self.put(data)
        return True

    def terminate(self, reason: Any) -> None:
        self.terminated.append(reason)

    def produce(self, feed: Any) -> None:
        while not feed(1 << 30):
            pass

    def take(self, kind: type) -> list[Any]:
        """The items of type `kind`, removed from `items`."""
        found = [item for item in self.items if isinstance(item, kind)]
        self.items = [item for item in self.items if not isinstance(item, kind)]
        return found

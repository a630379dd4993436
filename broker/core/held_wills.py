"""`HeldWills`: MQTT 5 wills waiting out their will delay interval.

A will with a delay is not published when its connection ends but when the delay (bounded by
the session's expiry) has passed; a new connection to the session before then cancels it
(5.0 section 3.1.3.2.2). The server's watchdog asks for the ones that are due (`due(now)`) a few
times a second and publishes them: nothing here waits or keeps a timer. Held wills live in
memory only, like Mosquitto's: a restart forgets them. A will's message expiry interval
counts from when it is published, not from when it was held (5.0 section 3.1.3.2.4), so
what comes out is a new message.
"""

from __future__ import annotations

from .message import Message


class HeldWills:
    def __init__(self) -> None:
        self._held: dict[str, tuple[float, Message]] = {}  # client id -> (due, will)

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, client_id: str, will: Message, due: float) -> None:
        self._held[client_id] = (due, will)

    def take(self, client_id: str) -> Message | None:
        """Remove and return the will held for `client_id`, if any, as published now."""
        entry = self._held.pop(client_id, None)
        return None if entry is None else _published_now(entry[1])

    def due(self, now: float) -> list[Message]:
        """Remove and return every will whose time has come, earliest first."""
        if not self._held:
            return []
        ready = sorted((due, cid) for cid, (due, _will) in self._held.items() if due <= now)
        return [_published_now(self._held.pop(cid)[1]) for _due, cid in ready]


def _published_now(will: Message) -> Message:
    return Message(will.topic, will.payload, will.qos, will.retain, will.properties, will.origin)

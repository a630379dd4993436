"""`DropLog`: every message not sent to a client ends up in a log line, with its count.

A client whose drops nobody has heard of for `interval` seconds gets a line at once (count
1, the first drop); the drops that follow within the interval are summed per client and
said by `flush`, which the server's timer calls every `interval` seconds, whether or not
anything else happens meanwhile. So a burst of 200,000 drops is two lines, the second
within one interval after the burst, and the counts of a client's lines add up to its
drops. Expired messages (MQTT 5) are the publisher's wish, not a failure: counted apart and
said at info level, the others at warning.

Nothing here yields or takes a lock: it is called from sessions (under their lock) and
from the timer, all on the hub's one thread.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("greenfly.session")

_Key = tuple[str, bool]  # (client id, expired)


class _Pending:
    """Drops of one client not said yet: how many, and the latest one's topic and reason."""

    __slots__ = ("count", "topic", "why")

    def __init__(self, topic: str, why: str) -> None:
        self.count = 1
        self.topic = topic
        self.why = why


class DropLog:
    __slots__ = ("interval", "_pending", "_quiet_until")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._pending: dict[_Key, _Pending] = {}
        # a client reported at t says its next drops at the next flush after t + interval
        self._quiet_until: dict[_Key, float] = {}

    def note(self, client_id: str, topic: str, why: str, expired: bool = False) -> None:
        """One message for `client_id` on `topic` was not sent, because `why`."""
        key = (client_id, expired)
        entry = self._pending.get(key)
        if entry is not None:
            entry.count += 1
            entry.topic = topic
            entry.why = why
            return
        now = time.monotonic()
        if self._quiet_until.get(key, 0.0) <= now:
            self._report(key, 1, topic, why)
            self._quiet_until[key] = now + self.interval
        else:
            self._pending[key] = _Pending(topic, why)

    def flush(self) -> int:
        """Say every count noted since the last flush: one line per client (per kind).
        Returns how many lines."""
        pending, self._pending = self._pending, {}
        now = time.monotonic()
        quiet = {key: until for key, until in self._quiet_until.items() if until > now}
        for key, entry in pending.items():
            self._report(key, entry.count, entry.topic, entry.why)
            quiet[key] = now + self.interval
        self._quiet_until = quiet
        return len(pending)

    @staticmethod
    def _report(key: _Key, count: int, topic: str, why: str) -> None:
        client_id, expired = key
        log.log(logging.INFO if expired else logging.WARNING,
                "client %s: dropped %d message(s) since the last report, latest on %r: %s",
                client_id, count, topic, why)

"""`ArrivalOrder`: readers whose sockets became readable together run in the order the bytes
came, whether they were blocked in a read or parked without a greenlet.

libev invokes the watchers that fired in one loop iteration last-first, so readers switched
to (or spawned) straight from their watchers serve two clients whose bytes arrived together
in reverse order: a PUBLISH sent right after another client's SUBSCRIBE overtakes it. MQTT
promises no order across connections, but Mosquitto keeps it, and the Paho interop suite
relies on it (test_subscribe_options, test_request_response: a SUBSCRIBE on one connection,
then at once a PUBLISH on another). Every reader's readiness goes through one `ArrivalOrder`
per hub instead: its watcher's callback only records the reader, and one callback at the
start of the next loop iteration runs them, last recorded first, which is epoll's order.
Running them from that callback directly (a switch each, no callback per reader) costs about
what libev's own switch did.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gevent


class ArrivalOrder:
    __slots__ = ("loop", "_ready")

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self._ready: list[Callable[[], Any]] = []

    def ready(self, resume: Callable[[], Any]) -> None:
        """From a read watcher's callback (in the hub): `resume` runs, in the hub, once the
        readers that became readable with it and before it have run. It may switch to a
        greenlet; that greenlet's next wait returns here and the next reader runs."""
        self._ready.append(resume)
        if len(self._ready) == 1:
            self.loop.run_callback(self._run)

    def _run(self) -> None:
        ready, self._ready = self._ready, []
        for resume in reversed(ready):
            resume()


_current: ArrivalOrder | None = None


def arrival_order() -> ArrivalOrder:
    """This hub's `ArrivalOrder` (one loop, so one order, shared by every listener)."""
    global _current
    loop = gevent.get_hub().loop
    order = _current
    if order is None or order.loop is not loop:
        order = _current = ArrivalOrder(loop)
    return order


def start_reader(run: Callable[[], Any]) -> None:
    """In the hub, from `ArrivalOrder`: run a parked connection's new reader now, not after
    the callbacks already queued (as `gevent.spawn` would), so it keeps its place in the order.
    A gevent `Greenlet` switched to directly runs as a spawned one does (the hub is its
    parent, it reports its own errors); it comes back here when it first waits."""
    gevent.Greenlet(run).switch()

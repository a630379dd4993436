"""`LateForwards`: what this node routed in the last `LATE_WINDOW`, for a route that arrives
after the message it should have had.

A SUBSCRIBE through one node and a PUBLISH through another race: the publishing node may
route the message before the other node's new filter reaches it through Redis. Each added
route is stamped with when its node took the SUBSCRIBE; a message that arrived here after
that (give or take `LATE_MARGIN`) and did not go to that node goes now, late, in publish
order and before anything routed from then on, as one node would have delivered it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from ..core.message import Message
from ..topics import matches

LATE_WINDOW = 0.2  # seconds a routed message is kept for a route that arrives after it
# A message that reached this node this long before another node took a SUBSCRIBE counts as
# after it: the two came in through different nodes, and a client that sent the SUBSCRIBE
# first (on one node, handled first) may be a little late on its node. Small: a message
# published well before a subscription must not reach it (the Paho suite's will delay test
# subscribes a few milliseconds after the previous test's last publish on that topic).
LATE_MARGIN = 0.005


class LateForwards:
    def __init__(self, send: Callable[[str, Message, frozenset[str]], None]) -> None:
        self.send = send  # (owner, message, sessions it was appended for): the late forward
        # (arrived, message, owners it went to, sessions it was appended for), newest last
        self.recent: deque[tuple[float, Message, set[str], frozenset[str]]] = deque()
        self.count = 0  # messages sent on to a node whose route came after them

    def remember(self, message: Message, nodes: list[str], appended: list[str]) -> None:
        now = time.time()
        recent = self.recent
        recent.append((now, message, set(nodes), frozenset(appended)))
        while recent and recent[0][0] < now - LATE_WINDOW:
            recent.popleft()

    def route_added(self, owner: str, topic_filter: str, since: float) -> None:
        """`owner` subscribed to `topic_filter` at `since`. A shared group gets nothing late
        (its message went to one member); a retained message from before the SUBSCRIBE
        neither (its subscriber's retained feed sends it, with retain set)."""
        if topic_filter.startswith("$share/"):
            return
        for arrived, message, sent, appended in self.recent:
            margin = 0.0 if message.retain else LATE_MARGIN
            if (arrived > since - margin and owner not in sent
                    and matches(topic_filter, message.topic)):
                sent.add(owner)
                self.count += 1
                self.send(owner, message, appended)

"""`ClusterStats`: the cluster-wide figures, for `$SYS/cluster/...` and `/metrics`.

Every `interval` each node writes its own counters to its stats hash in Redis (expiring after
three intervals, so a dead node's figures fade out), reads every node's, and keeps the sums.
It publishes them to its own clients only, retained, as `$SYS/cluster/<name>` and per node as
`$SYS/cluster/nodes/<node_id>/<name>`: `$SYS/broker/...` keeps meaning "this node", as on
Mosquitto, and a subscriber gets one copy of each cluster figure, from its own node.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import gevent

from ..core.context import BrokerContext
from ..core.message import Message
from ..core.stats import Stats
from .keys import Keys
from .redis_link import RedisLink, RedisUnavailable
from .wire import pairs

log = logging.getLogger("greenfly.cluster.stats")

PREFIX = "$SYS/cluster/"

# $SYS/cluster/<name> -> what one node contributes
FIGURES: dict[str, Callable[[Stats, BrokerContext], int]] = {
    "clients/connected": lambda stats, ctx: stats.clients_connected,
    "messages/received": lambda stats, ctx: stats.publish_received,
    "messages/sent": lambda stats, ctx: stats.publish_sent,
    "publish/dropped": lambda stats, ctx: stats.publish_dropped,
    "subscriptions/count": lambda stats, ctx: ctx.tree.count,
    "sessions/count": lambda stats, ctx: len(ctx.registry),
}


class ClusterStats:
    def __init__(self, link: RedisLink, keys: Keys, owner: str, node_id: str) -> None:
        self.link = link
        self.keys = keys
        self.owner = owner
        self.node_id = node_id
        self.ctx: BrokerContext | None = None
        self.totals: dict[str, int] = {}
        self.per_node: dict[str, dict[str, int]] = {}
        self._last: dict[str, bytes] = {}
        self._greenlet: gevent.Greenlet[..., None] | None = None
        self.housekeeping: Callable[[], object] | None = None  # run on the same beat

    def start(self, ctx: BrokerContext, interval: float) -> None:
        self.ctx = ctx
        self._greenlet = gevent.spawn(self._loop, interval)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)

    def _loop(self, interval: float) -> None:
        while True:
            try:
                if self.housekeeping is not None:
                    self.housekeeping()
                self.refresh(interval)
            except RedisUnavailable:
                pass
            except Exception:
                log.exception("cluster figures could not be gathered")
            gevent.sleep(interval)

    def refresh(self, interval: float) -> None:
        ctx = self.ctx
        if ctx is None:
            return
        mine = {name: figure(ctx.stats, ctx) for name, figure in FIGURES.items()}
        key = self.keys.stats(self.owner)
        flat: list[object] = ["node_id", self.node_id]
        for name, value in mine.items():
            flat += [name, value]
        self.link.pipeline([("HSET", key, *flat), ("PEXPIRE", key, int(interval * 3000))])
        owners = [o.decode() for o in self.link.call("HKEYS", self.keys.nodes)]
        replies = self.link.pipeline([("HGETALL", self.keys.stats(o)) for o in owners])
        per_node: dict[str, dict[str, int]] = {}
        for reply in replies:
            if not isinstance(reply, list) or not reply:
                continue
            fields = {k.decode(): v.decode() for k, v in pairs(reply).items()}
            node_id = fields.pop("node_id", "?")
            per_node[node_id] = {name: int(value) for name, value in fields.items()
                                 if value.lstrip("-").isdigit()}
        totals = {name: sum(node.get(name, 0) for node in per_node.values()) for name in FIGURES}
        totals["nodes/up"] = len(per_node)
        self.per_node, self.totals = per_node, totals
        if ctx.config.broker.sys_interval:
            self._publish(ctx, totals, per_node)

    def _publish(self, ctx: BrokerContext, totals: dict[str, int],
                 per_node: dict[str, dict[str, int]]) -> None:
        values = {PREFIX + name: value for name, value in totals.items()}
        for node_id, figures in per_node.items():
            for name, value in figures.items():
                values[f"{PREFIX}nodes/{node_id}/{name}"] = value
        for topic, value in values.items():
            payload = str(value).encode()
            if self._last.get(topic) != payload:
                self._last[topic] = payload
                ctx.router.publish(Message(topic, payload, 0, True), persist=False)

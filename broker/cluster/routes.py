"""Who in the cluster wants what: this node's filters, every other node's, and every
persistent session's subscriptions.

- `local`: how many of this node's sessions hold each filter. The first holder announces it
  (`HSET` on this owner's routes hash and a change on the routes channel), the last one
  leaving withdraws it: one forward per interested node, not a broadcast of every message.
- `remote`: a topic tree whose "clients" are the other owners, from those announcements.
- `persistent`: a topic tree of every persistent session's subscriptions in the cluster,
  whoever owns them, so a publisher can append a QoS 1/2 message to the queue of a session
  another node owns (or a dead node owned) before it acknowledges: nothing acknowledged
  depends on one node staying alive.
"""

from __future__ import annotations

import logging

from ..codec import SubOptions
from ..core.topic_tree import Target, TopicTree
from ..store.record_codec import decode_record
from ..store.records import Subscribed
from .keys import Keys
from .redis_link import RedisLink
from .redis_store import RedisStore

log = logging.getLogger("greenfly.cluster.routes")


class Routes:
    def __init__(self, keys: Keys, owner: str, store: RedisStore) -> None:
        self.keys = keys
        self.owner = owner
        self.store = store
        self.local: dict[str, int] = {}
        self.remote = TopicTree()
        self._remote_filters: dict[str, set[str]] = {}  # owner -> its filters
        self.persistent = TopicTree()

    # -- this node's filters -------------------------------------------------------------------

    def local_changed(self, topic_filter: str, delta: int) -> None:
        """The local topic tree's observer: announce a filter's first holder and last leaver."""
        count = self.local.get(topic_filter, 0) + delta
        if count > 0:
            self.local[topic_filter] = count
            if count == 1 and delta > 0:
                self._announce(b"+", topic_filter)
            return
        if self.local.pop(topic_filter, None) is not None:
            self._announce(b"-", topic_filter)

    def _announce(self, sign: bytes, topic_filter: str) -> None:
        routes = self.keys.routes(self.owner)
        if sign == b"+":
            self.store.submit(("HSET", routes, topic_filter, 1))
        else:
            self.store.submit(("HDEL", routes, topic_filter))
        self.store.submit(("PUBLISH", self.keys.routes_changes,
                           sign + self.owner.encode() + b"\0" + topic_filter.encode()))

    def announce_all(self) -> None:
        """After Redis lost what this node announced (restarted without it): say it again."""
        for topic_filter in self.local:
            self._announce(b"+", topic_filter)

    # -- other nodes' filters ------------------------------------------------------------------

    def route_change(self, data: bytes) -> None:
        sign, rest = data[:1], data[1:]
        owner, _, raw = rest.partition(b"\0")
        who = owner.decode()
        if who == self.owner:
            return
        if sign == b"*":
            self.drop_owner(who)
            return
        topic_filter = raw.decode()
        filters = self._remote_filters.setdefault(who, set())
        if sign == b"+":
            if topic_filter not in filters:
                filters.add(topic_filter)
                self.remote.subscribe(who, topic_filter, 2)
        elif topic_filter in filters:
            filters.discard(topic_filter)
            self.remote.unsubscribe(who, topic_filter)

    def drop_owner(self, owner: str) -> None:
        for topic_filter in self._remote_filters.pop(owner, set()):
            self.remote.unsubscribe(owner, topic_filter)

    def nodes_for(self, topic: str) -> list[str]:
        return [owner for owner, _qos, _options in self.remote.match(topic)]

    # -- persistent sessions' subscriptions ----------------------------------------------------

    def psubs_change(self, data: bytes) -> None:
        if data[:1] == b"+":
            self._add_persistent(data[1:])
        else:
            cid, _, topic_filter = data[1:].partition(b"\0")
            self.persistent.unsubscribe(cid.decode(), topic_filter.decode())

    def _add_persistent(self, blob: bytes) -> None:
        record = decode_record(blob)
        if isinstance(record, Subscribed):
            opts = SubOptions.from_byte(record.options, 5)
            self.persistent.subscribe(record.client_id, record.topic_filter, opts.qos,
                                      opts.no_local, opts.retain_as_published,
                                      record.subscription_id)

    def persistent_targets(self, topic: str) -> tuple[Target, ...]:
        return self.persistent.match(topic)

    # -- (re)loading ---------------------------------------------------------------------------

    def reload(self, link: RedisLink) -> None:
        """Everything from Redis again: at start, and after the pub/sub connection was lost
        (changes published meanwhile were missed)."""
        owners = [o.decode() for o in link.call("HKEYS", self.keys.nodes)]
        remote = TopicTree()
        filters: dict[str, set[str]] = {}
        for owner in owners:
            if owner == self.owner:
                continue
            mine = filters[owner] = {f.decode() for f in link.call("HKEYS",
                                                                     self.keys.routes(owner))}
            for topic_filter in mine:
                remote.subscribe(owner, topic_filter, 2)
        persistent = TopicTree()
        self.remote, self._remote_filters, self.persistent = remote, filters, persistent
        cursor = 0
        for _ in range(1_000_000):  # bounded: HSCAN ends when the cursor returns to 0
            cursor, found = link.call("HSCAN", self.keys.psubs, cursor, "COUNT", 1000)
            for blob in found[1::2]:
                self._add_persistent(blob)
            cursor = int(cursor)
            if not cursor:
                break
        log.info("cluster routes loaded: %d other node(s), %d persistent subscription(s)",
                 len(filters), persistent.count)

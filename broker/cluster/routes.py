"""Who in the cluster wants what: this node's filters, every other node's, and every
persistent session's subscriptions.

- `local`: how many of this node's sessions hold each filter. The first holder announces it
  (`HSET` on this owner's routes hash and a change on the routes channel), the last one
  leaving withdraws it: one forward per interested node, not a broadcast of every message.
- `others`: the other owners' filters (`OtherNodes`), from those announcements, and which
  owners hold each shared group: a group's message is served by one node, chosen alike by all.
- `persistent`: a topic tree of every persistent session's subscriptions in the cluster,
  whoever owns them, so a publisher can append a QoS 1/2 message to the queue of a session
  another node owns (or a dead node owned) before it acknowledges: nothing acknowledged
  depends on one node staying alive.
"""

from __future__ import annotations

import logging
import time

from ..codec import SubOptions
from ..core.topic_tree import Target, TopicTree
from ..store.record_codec import decode_record
from ..store.records import Subscribed
from ..topics import parse_shared
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
        self.others = OtherNodes()
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
        # An added filter says when (wall clock): a node that routed a message that arrived
        # after it, without it, sends it on late (LateForwards.route_added, cluster/late.py).
        when = b"\0%.6f" % time.time() if sign == b"+" else b""
        self.store.submit(("PUBLISH", self.keys.routes_changes,
                           sign + self.owner.encode() + b"\0" + topic_filter.encode() + when))

    def announce_all(self) -> None:
        """After Redis lost what this node announced (restarted without it): say it again."""
        for topic_filter in self.local:
            self._announce(b"+", topic_filter)

    # -- other nodes' filters ------------------------------------------------------------------

    def route_change(self, data: bytes) -> tuple[str, str, float] | None:
        """Apply another node's change; for a filter added: (owner, filter, since when)."""
        sign, rest = data[:1], data[1:]
        owner, _, raw = rest.partition(b"\0")
        who = owner.decode()
        if who == self.owner:
            return None
        if sign == b"*":
            self.drop_owner(who)
        elif sign == b"+":
            topic_filter, _, when = raw.partition(b"\0")
            self.others.add(who, topic_filter.decode())
            return who, topic_filter.decode(), float(when or 0)
        else:
            self.others.remove(who, raw.decode())
        return None

    def drop_owner(self, owner: str) -> None:
        self.others.drop(owner)

    def nodes_for(self, topic: str) -> list[str]:
        return [owner for owner, _qos, _options in self.others.tree.match(topic)]

    def shared_holders(self, key: str) -> list[str]:
        """Every owner with a member of the shared group `key`, this one included, sorted: the
        same list on every node, from which each message's server is chosen."""
        holders = self.others.holders.get(key)
        if not holders:
            return [self.owner] if key in self.local else []
        if key in self.local:
            return sorted({*holders, self.owner})
        return sorted(holders)

    # -- persistent sessions' subscriptions ----------------------------------------------------

    def psubs_change(self, data: bytes) -> None:
        if data[:1] == b"+":
            self._add_persistent(data[1:])
        else:
            cid, _, topic_filter = data[1:].partition(b"\0")
            if not topic_filter.startswith(b"$share/"):
                self.persistent.unsubscribe(cid.decode(), topic_filter.decode())

    def _add_persistent(self, blob: bytes) -> None:
        record = decode_record(blob)
        # A shared group's message goes to one node, whose router picks the member: the
        # groups are the route table's business, not this table's.
        if isinstance(record, Subscribed) and parse_shared(record.topic_filter) is None:
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
        others = OtherNodes()
        for owner in owners:
            if owner != self.owner:
                for topic_filter in link.call("HKEYS", self.keys.routes(owner)):
                    others.add(owner, topic_filter.decode())
        persistent = TopicTree()
        self.others, self.persistent = others, persistent
        cursor = 0
        for _ in range(1_000_000):  # bounded: HSCAN ends when the cursor returns to 0
            cursor, found = link.call("HSCAN", self.keys.psubs, cursor, "COUNT", 1000)
            for blob in found[1::2]:
                self._add_persistent(blob)
            cursor = int(cursor)
            if not cursor:
                break
        log.info("cluster routes loaded: %d other node(s), %d persistent subscription(s)",
                 len(others.filters), persistent.count)


class OtherNodes:
    """The other owners' filters: a topic tree whose "clients" are owners (a shared group
    counts as its inner filter there, so every node holding the group gets the message and
    decides), and which owners hold each shared group."""

    def __init__(self) -> None:
        self.tree = TopicTree()
        self.filters: dict[str, set[str]] = {}  # owner -> filters as announced
        self.holders: dict[str, set[str]] = {}  # `$share/group/filter` -> owners
        self._inner: dict[tuple[str, str], int] = {}  # (owner, tree filter) -> how many

    def add(self, owner: str, topic_filter: str) -> None:
        filters = self.filters.setdefault(owner, set())
        if topic_filter in filters:
            return
        filters.add(topic_filter)
        shared = parse_shared(topic_filter)
        inner = topic_filter
        if shared is not None:
            self.holders.setdefault(topic_filter, set()).add(owner)
            inner = shared[1]
        count = self._inner.get((owner, inner), 0)
        self._inner[(owner, inner)] = count + 1
        if not count:
            self.tree.subscribe(owner, inner, 2)

    def remove(self, owner: str, topic_filter: str) -> None:
        filters = self.filters.get(owner)
        if filters is None or topic_filter not in filters:
            return
        filters.discard(topic_filter)
        shared = parse_shared(topic_filter)
        inner = topic_filter
        if shared is not None:
            holders = self.holders.get(topic_filter)
            if holders is not None:
                holders.discard(owner)
                if not holders:
                    del self.holders[topic_filter]
            inner = shared[1]
        count = self._inner.get((owner, inner), 0) - 1
        if count > 0:
            self._inner[(owner, inner)] = count
        else:
            self._inner.pop((owner, inner), None)
            self.tree.unsubscribe(owner, inner)

    def drop(self, owner: str) -> None:
        for topic_filter in list(self.filters.get(owner, ())):
            self.remove(owner, topic_filter)
        self.filters.pop(owner, None)

"""`ClusterNode`: one greenfly process as a member of a cluster on Redis (core's
`ClusterHooks`).

- **Claim** (a CONNECT): one script raises the session's epoch, names this node its owner and
  returns the stored session, so every later append is either in what was read or answered
  with this node's name. A live connection on another node is told to go (its node closes
  it with 0x8E, as on a takeover within one node); its late writes are refused by the epoch.
- **Publish**: local subscribers as on one node; then each QoS 1/2 message is appended to
  the Redis queue of every persistent session elsewhere that wants it (the PUBACK waits for
  those appends, like for the journal's fsync), its owner is told, and every other node with
  a live subscriber gets the message once on its push channel.
- **Owed messages** arriving for a session this node owns are queued and sent; each log
  entry's position is tracked, so a notification missed while the pub/sub link was down is
  found again in the log when it is back.
- **Retained** messages are one hash; every node keeps a copy, told of each change, and a
  SUBSCRIBE waits for a PING through the same pub/sub connection, after which every change
  acknowledged before it has arrived.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import gevent

from ..config.loading import redis_password
from ..config.redis_durability import durability_warnings
from ..config.schema import ClusterSection
from ..core.context import BrokerContext
from ..core.message import Message
from ..core.protocol_state import TAKEOVER
from ..errors import ReasonCode
from ..store.base import restore
from ..store.record_codec import decode_record
from ..store.records import MessageQueued, MessageStored, OutgoingWithdrawn, Record
from . import compaction, scripts, wire
from .cluster_stats import ClusterStats
from .handoff import Handoff
from .keys import Keys
from .late import LateForwards
from .membership import Membership
from .positions import Positions
from .redis_link import RedisLink, RedisUnavailable
from .redis_store import RedisStore
from .routes import Routes

log = logging.getLogger("greenfly.cluster")

CLEAN_SESSION_TTL_MS = 7 * 24 * 3600 * 1000  # a clean session's owner entry, refreshed per claim
STATS_INTERVAL = 10  # seconds between cluster figures when sys_interval is 0 (/metrics only)
QUEUE_CAP_FACTOR = 3  # a session log holds at most this x max_queued_messages entries + 1,000


class ClusterNode:
    def __init__(self, section: ClusterSection, link: RedisLink, owner: str,
                 queue_limit: int) -> None:
        self.section = section
        self.link = link
        self.owner = owner
        self.keys = Keys(section.key_prefix)
        cap = queue_limit * QUEUE_CAP_FACTOR + 1_000 if queue_limit else 0
        self.store = RedisStore(link, self.keys, owner, cap)
        self.store.events = self
        self.routes = Routes(self.keys, owner, self.store)
        self.membership = Membership(link, self.keys, owner, section.node_id, section.lease_ms,
                                     self.routes)
        self.figures = ClusterStats(link, self.keys, owner, section.node_id)
        self.figures.housekeeping = self.forget_gone
        self.takeovers = 0  # sessions this node took from another live node
        self.given_up = 0  # sessions another node took from this one
        self._claim = link.script(scripts.CLAIM)
        self._compact = link.script(scripts.COMPACT)
        self._adopt = link.script(scripts.ADOPT)
        self.compacting: set[str] = set()
        self.ctx: BrokerContext | None = None
        self.subscriber: Any = None
        self.loading: dict[str, list[tuple[int, MessageQueued]]] = {}
        self._kicked_while_loading: dict[str, int] = {}
        self.positions = Positions()
        self.dropped_remote = 0  # QoS 0 forwards not sent: Redis was down
        self.late = LateForwards(self._send_late)
        # client ids whose will this node stored in Redis: only those need it taken out
        self._with_will: set[str] = set()
        self.handoff = Handoff(link, self.keys, owner, self.store, self._let_go)

    @classmethod
    def create(cls, section: ClusterSection, queue_limit: int) -> ClusterNode:
        """Connect to Redis (waiting up to 30 s for it) and take a new incarnation."""
        link = RedisLink(section.redis_url, redis_password(section),
                         name=f"greenfly-{section.node_id}")
        keys = Keys(section.key_prefix)
        for attempt in range(60):
            try:
                incarnation = int(link.call("INCR", keys.incarnation(section.node_id)))
                break
            except RedisUnavailable as exc:
                if attempt == 59:
                    raise SystemExit(f"greenfly: cluster: Redis at {section.redis_url} "
                                     f"is unreachable ({exc}); [cluster] needs it to "
                                     "start") from None
                log.warning("cluster: Redis at %s unreachable (%s); retrying", section.redis_url,
                            exc)
                gevent.sleep(0.5)
        return cls(section, link, f"{section.node_id}.{incarnation}", queue_limit)

    # -- start and stop ----------------------------------------------------------------------

    def attach(self, ctx: BrokerContext) -> None:
        """Hook into the state machine (after the retained messages were restored)."""
        self.ctx = ctx
        ctx.router.cluster = self
        self.membership.publish = ctx.router.publish
        self.membership.adopt = self.adopt
        ctx.tree.observer = self.routes.local_changed

    def start(self) -> None:
        """Join: subscribe, load the others' routes, register, start the lease."""
        keys = self.keys
        self.subscriber = self.link.subscriber(self._on_message, self._on_reconnect)
        self.subscriber.on_lost = self.store.link_lost
        self.subscriber.subscribe(keys.push(self.owner), keys.control(self.owner),
                                  keys.routes_changes.encode(), keys.psubs_changes.encode(),
                                  keys.retained_changes.encode())
        self.subscriber.barrier(5.0)
        self.routes.reload(self.link)
        self.membership.join()
        self._say_durability()
        interval = self.ctx.config.broker.sys_interval if self.ctx is not None else 0
        if self.ctx is not None:
            self.figures.start(self.ctx, float(interval or STATS_INTERVAL))
        log.info("cluster: joined as %s (Redis %s)", self.owner, self.section.redis_url)

    def _say_durability(self) -> None:
        """Log once, at start, if Redis would not keep what this node acknowledges."""
        found: list[str | None] = []
        for name in ("appendonly", "appendfsync"):
            try:
                reply = self.link.call("CONFIG", "GET", name)
            except Exception:  # unreachable, or CONFIG renamed or not allowed here
                reply = None
            found.append(reply[1].decode() if isinstance(reply, list) and len(reply) == 2
                         else None)
        for warning in durability_warnings(found[0], found[1]):
            log.warning("cluster: %s", warning)

    def stop(self) -> None:
        """After every connection closed: what they wrote (their wills' removal too) goes
        out first, then the lease, so the reaper that comes at once finds nothing to send
        twice."""
        self.figures.stop()
        if self.subscriber is not None:
            self.subscriber.close()
        self.store.close()
        self.membership.leave()
        self.link.close()

    # -- ClusterHooks ------------------------------------------------------------------------

    def claim(self, client_id: str, clean_start: bool, persistent: bool,
              will: Message | None) -> ReasonCode | None:
        ctx = self.ctx
        assert ctx is not None
        store = self.store
        with contextlib.suppress(RedisUnavailable):  # the claim below answers for it
            self.handoff.before_claim(client_id)
        mine = store.epochs.get(client_id, -1)
        self.loading[client_id] = []
        try:
            answer = self._claim(self.keys.session_keys(client_id),
                                 [self.owner, int(clean_start), client_id,
                                  self.keys.psubs_changes, CLEAN_SESSION_TTL_MS, mine])
        except RedisUnavailable:
            self.loading.pop(client_id, None)
            self._kicked_while_loading.pop(client_id, None)
            if persistent:
                return ReasonCode.SERVER_BUSY
            return None  # a clean session is served here alone until Redis is back
        except BaseException:
            self.loading.pop(client_id, None)
            self._kicked_while_loading.pop(client_id, None)
            raise
        old_owner, old_epoch, epoch, seq, _stored, entries = answer
        old_owner, old_epoch, epoch = old_owner.decode(), int(old_epoch), int(epoch)
        buffered = self.loading.pop(client_id, [])
        kicked = self._kicked_while_loading.pop(client_id, 0)
        registry = ctx.registry
        local = registry.get(client_id)
        if old_owner != self.owner or old_epoch != mine:
            if local is not None:  # a copy from before another node had it: stale
                if local.peer is not None:
                    local.peer.terminate(TAKEOVER)
                registry.forget(local)
            if old_owner and old_owner != self.owner:
                self.takeovers += 1
                store.submit(("PUBLISH", self.keys.control(old_owner),
                              wire.kick(client_id, epoch)))
            if entries:
                self._load(entries)
        store.epochs[client_id] = epoch
        self.positions.start(client_id, int(seq))
        for pos, record in buffered:
            self._owed(client_id, pos, record)
        if kicked > epoch:  # a connection elsewhere claimed it after us, while we loaded
            self._let_go(client_id)
            return ReasonCode.SERVER_BUSY
        if persistent:
            store.submit(("SADD", self.keys.sessions(self.owner), client_id))
        if will is not None:
            store.submit(("HSET", self.keys.wills(self.owner), client_id,
                          b"%d:" % epoch + wire.message_record(will)))
            self._with_will.add(client_id)
        elif client_id in self._with_will:  # an earlier connection's, not sent: gone now
            self._drop_will(client_id)
        return None

    def adopt(self, client_id: str, dead: str) -> bool:
        """A dead owner's offline session becomes this node's (the reaper's step)."""
        ctx = self.ctx
        if ctx is None or client_id in self.store.epochs:
            return False
        self.loading[client_id] = []
        try:
            answer = self._adopt([self.keys.session(client_id), self.keys.log(client_id)],
                                 [dead, self.owner])
        finally:
            buffered = self.loading.pop(client_id, [])
            kicked = self._kicked_while_loading.pop(client_id, 0)
        if not answer:
            return False
        epoch, seq, entries = answer
        if kicked > int(epoch):
            return False  # its client claimed it elsewhere meanwhile
        if entries:
            self._load(entries)
        self.store.epochs[client_id] = int(epoch)
        self.positions.start(client_id, int(seq))
        for pos, record in buffered:
            self._owed(client_id, pos, record)
        self.store.submit(("SADD", self.keys.sessions(self.owner), client_id))
        return True

    def forward(self, message: Message) -> int:
        topic = message.topic
        if topic.startswith("$"):
            return 0  # $SYS and the like: each node's own
        reached = 0
        store = self.store
        appended: list[str] = []
        if message.qos:
            owned = store.epochs
            for client_id, qos, options in self.routes.persistent_targets(topic):
                if client_id in owned:
                    continue  # the local router has it
                retain = False
                sub_ids: tuple[int, ...] = ()
                if options is not None:
                    if options.no_local and client_id == message.origin:
                        options = options.own  # [MQTT-3.8.3-3]
                        if options is None:
                            continue
                        qos = options.qos
                    retain = message.retain and options.retain_as_published
                    sub_ids = options.identifiers
                granted = qos if qos < message.qos else message.qos
                if not granted:
                    continue
                if not message.stored:
                    message.msg_id = store.new_message_id()
                    message.stored = True
                store.append(MessageQueued(message.msg_id, topic, message.payload, message.qos,
                                           message.retain, message.origin, message.properties,
                                           client_id, granted, retain, 0, message.received_at,
                                           sub_ids))
                appended.append(client_id)
                reached += 1
        nodes = self.routes.nodes_for(topic)
        self.late.remember(message, nodes, appended)
        if nodes:
            if store.failure is not None:
                self.dropped_remote += len(nodes)
                return reached
            data = wire.forward(message)
            for owner in nodes:
                store.submit(("PUBLISH", self.keys.push(owner), data))
            reached += len(nodes)
        return reached

    def _send_late(self, owner: str, message: Message, appended: frozenset[str]) -> None:
        self.store.submit(("PUBLISH", self.keys.push(owner), wire.late(message, appended)))

    def shared_groups(self, message: Message) -> Callable[[str], bool] | None:
        if not self.routes.others.holders:
            return None  # no other node has a shared group member: this one serves its own
        if not message.msg_id:
            message.msg_id = self.store.new_message_id()  # the same on every node it reaches
        turn = message.msg_id
        holders_of = self.routes.shared_holders
        owner = self.owner

        def serves(key: str) -> bool:
            holders = holders_of(key)
            return not holders or holders[turn % len(holders)] == owner
        return serves

    def retained_barrier(self) -> None:
        if self.subscriber is not None:
            self.subscriber.barrier(1.0)

    def forget_gone(self) -> int:
        """Drop what this node tracks for sessions it no longer holds (expired, deleted, a
        clean one that ended elsewhere): called now and then; returns how many."""
        ctx = self.ctx
        if ctx is None:
            return 0
        sessions = ctx.registry.sessions
        gone = [cid for cid in self.store.epochs
                if cid not in sessions and cid not in self.loading]
        for cid in gone:
            self._untrack(cid)
        return len(gone)

    def _untrack(self, client_id: str) -> None:
        """This node no longer holds `client_id`'s session: no epoch, no log positions."""
        self.store.epochs.pop(client_id, None)
        self.positions.forget(client_id)

    def connection_closed(self, client_id: str) -> None:
        ctx = self.ctx
        session = ctx.registry.get(client_id) if ctx is not None else None
        if session is not None and session.peer is not None:
            return  # a newer connection of this node holds it, and its will
        if client_id in self._with_will:
            self._drop_will(client_id)
        if session is None or not session.persistent:
            self._untrack(client_id)

    def _drop_will(self, client_id: str) -> None:
        self._with_will.discard(client_id)
        self.store.submit(("HDEL", self.keys.wills(self.owner), client_id))

    # -- RedisStore's events -----------------------------------------------------------------

    def fenced(self, client_id: str, epoch: int) -> None:
        if self.store.epochs.get(client_id, epoch) < epoch:
            log.info("cluster: %s belongs to another node now (epoch %d)", client_id, epoch)
            self._let_go(client_id)

    def appended_elsewhere(self, client_id: str, pos: int, owner: str, record: bytes) -> None:
        if owner == self.owner:
            queued = decode_record(record)
            if isinstance(queued, MessageQueued):
                self._owed(client_id, pos, queued)
            return
        if owner:
            self.store.submit(("PUBLISH", self.keys.push(owner), wire.owed(client_id, pos,
                                                                             record)))

    def position(self, client_id: str, pos: int) -> None:
        self.positions.seen(client_id, pos)
        self._maybe_compact(client_id)

    def _maybe_compact(self, client_id: str) -> None:
        written = self.positions.count_written(client_id)
        if written < compaction.COMPACT_AFTER or client_id in self.compacting:
            return
        ctx = self.ctx
        session = ctx.registry.get(client_id) if ctx is not None else None
        if session is None or not session.persistent or client_id not in self.store.epochs:
            return
        held = len(session.queue) + len(session.inflight) + len(session.subscriptions)
        if compaction.due(held, written):
            self.positions.written[client_id] = 0
            self.compacting.add(client_id)
            gevent.spawn(self._compact_log, client_id)

    def _compact_log(self, client_id: str) -> None:
        try:
            entries = self.link.call("LRANGE", self.keys.log(client_id), 0, -1)
            last, records = compaction.compacted(entries)
            epoch = self.store.epochs.get(client_id)
            if last and epoch is not None:
                self._compact([self.keys.session(client_id), self.keys.log(client_id)],
                              [epoch, last, *records])
        except RedisUnavailable:
            pass
        except Exception:
            log.exception("cluster: compacting the log of %s failed", client_id)
        finally:
            self.compacting.discard(client_id)

    def redis_state(self, up: bool) -> None:
        pass  # the store's `failure` is what the state machine and /readyz read

    def metrics(self) -> dict[str, tuple[str, float]]:
        """name -> (help, value): what /metrics shows of the cluster, read from memory."""
        figures = self.figures.totals
        return {
            "cluster_nodes_up": ("Nodes whose figures are fresh in Redis",
                                 figures.get("nodes/up", 0)),
            "cluster_clients_connected": ("Clients connected to any node",
                                          figures.get("clients/connected", 0)),
            "cluster_messages_received": ("PUBLISH packets received by all nodes",
                                          figures.get("messages/received", 0)),
            "cluster_messages_sent": ("PUBLISH packets sent by all nodes",
                                      figures.get("messages/sent", 0)),
            "cluster_redis_up": ("1 while this node can write to Redis",
                                 0 if self.store.failure else 1),
            "cluster_takeovers": ("Sessions this node took from another node", self.takeovers),
            "cluster_sessions_given_up": ("Sessions another node took from this one",
                                          self.given_up),
            "cluster_nodes_reaped": ("Dead nodes whose wills and routes this node handled",
                                     self.membership.reaped),
            "cluster_forwards_dropped": ("QoS 0 forwards not sent: Redis was unavailable",
                                         self.dropped_remote),
            "cluster_late_forwards": ("Messages sent on to a node whose subscription this "
                                      "node learnt of after routing them", self.late.count),
            "cluster_queue_full_drops": ("Messages not appended: a session's log in Redis was "
                                         "at its cap", self.store.dropped_full),
        }

    # -- messages from other nodes -----------------------------------------------------------

    def _on_message(self, channel: bytes, data: bytes) -> None:
        keys = self.keys
        try:
            if channel == keys.push(self.owner):
                if data[0] == wire.FORWARD:
                    self._forwarded(data[1:])
                elif data[0] == wire.LATE:
                    appended, blob = wire.parse_late(data)
                    self._forwarded(blob, appended)
                elif data[0] == wire.OWED:
                    client_id, pos, record = wire.parse_owed(data)
                    self._owed(client_id, pos, record)
            elif channel == keys.control(self.owner):
                if data[0] == wire.RELEASE:
                    self.handoff.release_asked(data)
                elif data[0] == wire.RELEASED:
                    self.handoff.release_answered(data)
                else:
                    client_id, epoch = wire.parse_kick(data)
                    self._kick(client_id, epoch)
            elif channel == keys.routes_changes.encode():
                added = self.routes.route_change(data)
                if added is not None and self.late.recent:
                    self.late.route_added(*added)
            elif channel == keys.psubs_changes.encode():
                self.routes.psubs_change(data)
            elif channel == keys.retained_changes.encode():
                self._retained_change(data)
        except Exception:  # one bad message must not stop the node's pub/sub greenlet
            log.exception("cluster: cannot handle a message on %r", channel)

    def _forwarded(self, blob: bytes, appended: frozenset[str] | None = None) -> None:
        record = decode_record(blob)
        if isinstance(record, MessageStored) and self.ctx is not None:
            self.ctx.router.publish(wire.message_from(record), forwarded=True,
                                    appended=appended)

    def _owed(self, client_id: str, pos: int, record: MessageQueued) -> None:
        waiting = self.loading.get(client_id)
        if waiting is not None:
            waiting.append((pos, record))
            return
        positions = self.positions
        if client_id not in self.store.epochs or positions.was_seen(client_id, pos):
            return
        positions.seen(client_id, pos)
        ctx = self.ctx
        session = ctx.registry.get(client_id) if ctx is not None else None
        if session is None:
            return
        message = wire.message_from(record)
        rules = session.rules
        if rules is not None and not rules.can_read(message.topic):
            self.store.append(OutgoingWithdrawn(client_id, record.msg_id))
            return
        session.accept_owed(message, record.out_qos, record.out_retain, record.sub_ids)
        self._maybe_compact(client_id)

    def _kick(self, client_id: str, epoch: int) -> None:
        if client_id in self.loading:
            self._kicked_while_loading[client_id] = max(
                epoch, self._kicked_while_loading.get(client_id, 0))
            return
        if self.store.epochs.get(client_id, epoch) < epoch:
            self._let_go(client_id)

    def _let_go(self, client_id: str) -> None:
        """Another node owns `client_id` now: close its connection here (MQTT 5: 0x8E) and
        forget the session without recording anything."""
        self._untrack(client_id)
        ctx = self.ctx
        session = ctx.registry.get(client_id) if ctx is not None else None
        if session is None or ctx is None:
            return
        self.given_up += 1
        if session.peer is not None:
            session.peer.terminate(TAKEOVER)  # [MQTT-3.1.4-2]
        ctx.registry.forget(session)

    def _retained_change(self, data: bytes) -> None:
        kind = data[:1]
        origin, _, rest = data[1:].partition(b"\0")
        ctx = self.ctx
        if ctx is None or origin.decode() == self.owner:
            return
        if kind == b"S":
            record = decode_record(rest)
            if isinstance(record, MessageStored):
                ctx.retained.set(wire.message_from(record))
        elif kind == b"C":
            ctx.retained.clear(rest.decode())

    # -- positions in the session logs -------------------------------------------------------

    def _load(self, entries: list[bytes]) -> None:
        records: list[Record] = [wire.log_entry(entry)[2] for entry in entries]
        ctx = self.ctx
        assert ctx is not None
        ctx.registry.restore(restore(records), ctx.retained)

    def _on_reconnect(self) -> None:
        """The pub/sub link was lost and is back: reload what changes were missed, and look in
        the logs of the sessions owned here for messages whose notification was missed."""
        gevent.spawn(self._catch_up)

    def _catch_up(self) -> None:
        self.store.link_back()
        try:
            self.routes.reload(self.link)
            self._reload_retained()
            for client_id in list(self.store.epochs):
                entries = self.link.call("LRANGE", self.keys.log(client_id), 0, -1)
                for entry in entries:
                    pos, foreign, record = wire.log_entry(entry)
                    if foreign and isinstance(record, MessageQueued):
                        self._owed(client_id, pos, record)
        except RedisUnavailable:
            log.warning("cluster: Redis went away again while catching up")

    def _reload_retained(self) -> None:
        ctx = self.ctx
        if ctx is None:
            return
        stored = self.link.call("HGETALL", self.keys.retained)
        fresh = {}
        for topic, blob in wire.pairs(stored).items():
            record = decode_record(blob)
            if isinstance(record, MessageStored):
                fresh[topic.decode()] = wire.message_from(record)
        for message in ctx.retained.all():
            if message.stored and message.topic not in fresh:
                ctx.retained.clear(message.topic)
        for message in fresh.values():
            ctx.retained.set(message)

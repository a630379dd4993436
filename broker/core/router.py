"""`Router`: the one place that fans a message out.

`publish(message)`: update the retained store, ask the topic tree who matches, and hand the
message to each subscriber's session at min(publish QoS, granted QoS). Deliveries to
subscribers that already existed carry retain=0 [MQTT-3.3.1-9], unless one of the MQTT 5
subscriptions it matched asked to retain as published (5.0 section 3.8.3.1); retained
messages sent in answer to a SUBSCRIBE carry retain=1 [MQTT-3.3.1-6] [MQTT-3.3.1-8]
(`retained_feed`). A client's own message skips its no-local subscriptions [MQTT-3.8.3-3];
each delivery carries the identifiers of every subscription it matched [MQTT-3.3.4-4].

Shared groups (5.0 section 4.8.2): a member that leaves its group, by unsubscribing or with
its session's end, hands what it holds for the group and has not acknowledged to another
member (`hand_over`).

Retained messages are written to the store (so they survive restarts) unless `persist` is
false, which `$SYS` uses: its values are recomputed after every start.
"""

from __future__ import annotations

import logging

from ..store.base import SessionStore
from ..store.records import RetainedCleared, RetainedSet
from ..topics import matches, parse_shared
from .cluster_hooks import ClusterHooks
from .message import Message
from .registry import SessionRegistry
from .retained import RetainedMessages
from .retained_feed import RetainedFeed
from .session import Session
from .stats import Stats
from .topic_tree import TopicTree

log = logging.getLogger("greenfly.router")

ALL_DROPPED = -1  # Router.publish: subscribers matched, and every one dropped the message


class Router:
    def __init__(self, tree: TopicTree, retained: RetainedMessages, registry: SessionRegistry,
                 store: SessionStore, stats: Stats) -> None:
        self.tree = tree
        self.retained = retained
        self.registry = registry
        self.store = store
        self.stats = stats
        sessions = registry.sessions

        def online(client_id: str) -> bool:
            session = sessions.get(client_id)
            return session is not None and session.peer is not None

        self._online = online
        self.cluster: ClusterHooks | None = None  # set by a cluster node
        registry.hand_over = self.hand_over  # a session's end leaves its shared groups

    def publish(self, message: Message, persist: bool = True, forwarded: bool = False,
                appended: frozenset[str] | None = None) -> int:
        """Deliver `message` to every matching session. Returns how many took it (0: nobody
        matched), or ALL_DROPPED when subscribers matched and every one of them dropped it
        (a full queue, a packet above its maximum): MQTT 5's "quota exceeded".

        In a cluster, a message from a client of this node also goes to the other nodes
        (`cluster.forward`, counted in the result); one `forwarded` from another node was
        retained there already, and skips the persistent sessions it reaches at QoS 1/2:
        the publishing node appended it to their queues in Redis before its PUBACK. One sent
        late (the publishing node learnt of this node's subscription after it had routed the
        message) says which sessions it was `appended` for: the others take it here."""
        if message.retain and not forwarded:
            self._retain(message, persist)
        cluster = self.cluster
        if cluster is None:
            remote, serves = 0, None
        else:
            serves = cluster.shared_groups(message)
            remote = cluster.forward(message) if persist and not forwarded else 0
        targets = self.tree.match(message.topic, self._online, serves)
        if not targets:
            return remote
        sessions = self.registry.sessions
        pub_qos = message.qos
        delivered = 0
        lost = 0
        topic = message.topic
        for client_id, qos, options in targets:
            session = sessions.get(client_id)
            if session is not None:
                if forwarded and session.persistent and qos and pub_qos and (
                        appended is None or client_id in appended):
                    continue  # in its queue in Redis already (see above)
                rules = session.rules
                if rules is not None and not rules.can_read(topic):
                    continue  # the ACL is checked per delivery, not only at SUBSCRIBE
                if options is None:  # [MQTT-3.3.1-9]
                    taken = session.deliver(message, qos if qos < pub_qos else pub_qos, False)
                else:
                    if options.no_local and client_id == message.origin:
                        options = options.own  # [MQTT-3.8.3-3]
                        if options is None:
                            continue
                        qos = options.qos
                    taken = session.deliver(message, qos if qos < pub_qos else pub_qos,
                                            message.retain and options.retain_as_published,
                                            options.identifiers)  # [MQTT-3.3.4-4]
                if taken:
                    delivered += 1
                else:
                    lost += 1
        if lost and not delivered and not remote:
            return ALL_DROPPED
        return delivered + remote

    def _retain(self, message: Message, persist: bool) -> None:
        if not message.payload:  # [MQTT-3.3.1-10] [MQTT-3.3.1-11]
            if self.retained.clear(message.topic) and persist:
                self.store.append(RetainedCleared(message.topic))
            return
        self.retained.set(message)
        if persist:
            message.ensure_stored(self.store)
            self.store.append(RetainedSet(message.topic, message.msg_id))

    def retained_feed(self, session: Session, topic_filter: str, granted_qos: int,
                      identifier: int = 0) -> RetainedFeed:
        """After a SUBSCRIBE: the retained messages the new filter matches, to be sent with
        retain=1 and the subscription's identifier as the client reads (`Peer.produce`)."""
        if self.cluster is not None:
            self.cluster.retained_barrier()
        found = self.retained.match(topic_filter)
        rules = session.rules
        if rules is not None:
            found = [message for message in found if rules.can_read(message.topic)]
        return RetainedFeed(session, self.retained, found, granted_qos,
                            (identifier,) if identifier else ())

    def hand_over(self, session: Session, leaving: list[str], ending: bool) -> int:
        """`session`'s client leaves the shared groups `leaving` (`$share/...` filters it no
        longer holds in the tree): the QoS 1/2 messages it holds for them and has not
        acknowledged go to another member of the same group, each to one (5.0 section
        4.8.2). Returns how many.

        Which messages: those queued for the client, and, when its session ends (`ending`),
        also the QoS 1 ones sent and unacknowledged. A QoS 2 message sent already stays: it
        must never reach another client [MQTT-4.8.2-5]; after an UNSUBSCRIBE every message in
        flight completes to this client [MQTT-3.10.4-3]. A message is the group's only when
        the group's filter is the one subscription of the client it matches: one that also
        matched another subscription of the client may have been that one's copy, and
        stays (a duplicate for the group would be worse than a message kept)."""
        tree = self.tree
        inner = {f: _path_of(f) for f in leaving}
        others = [_path_of(f) for f in session.subscriptions if f not in inner]
        # Only to a group that has another member: otherwise the client keeps the message.
        open_groups = {f for f in inner if tree.has_member(f, skip=session.client_id)}
        if not open_groups:
            return 0
        verdicts: dict[str, str | None] = {}

        def group_of(message: Message) -> str | None:
            topic = message.topic
            if topic not in verdicts:
                hits = [f for f, path in inner.items() if matches(path, topic)]
                alone = len(hits) == 1 and not any(matches(path, topic) for path in others)
                verdicts[topic] = hits[0] if alone and hits[0] in open_groups else None
            return verdicts[topic]

        taken = session.withdraw(lambda message: group_of(message) is not None, ending)
        sessions = self.registry.sessions
        handed = 0
        for message, _qos in taken:
            group = group_of(message)
            assert group is not None
            target = tree.pick_member(group, self._online, skip=session.client_id)
            member = sessions.get(target[0]) if target is not None else None
            if target is None or member is None:
                continue  # cannot be: the tree names only registered clients
            _client_id, qos, options = target
            rules = member.rules
            if rules is not None and not rules.can_read(message.topic):
                # Members of one group that may read different topics: a misconfiguration
                # that costs this message, counted and logged like any drop.
                self.stats.publish_dropped += 1
                log.warning("client %s left shared group %s: a message on %r dropped, the "
                            "member picked (%s) may not read it", session.client_id, group,
                            message.topic, member.client_id)
                continue
            qos = qos if qos < message.qos else message.qos
            if options is None:
                member.deliver(message, qos, False)
            else:
                member.deliver(message, qos, message.retain and options.retain_as_published,
                               options.identifiers)
            handed += 1
        if handed:
            log.info("client %s left shared group(s) %s: %d unacknowledged message(s) handed "
                     "to other members", session.client_id, ", ".join(sorted(inner)), handed)
        return handed


def _path_of(topic_filter: str) -> str:
    """The filter a subscription matches topics with (a shared one's inner filter)."""
    shared = parse_shared(topic_filter)
    return shared[1] if shared else topic_filter

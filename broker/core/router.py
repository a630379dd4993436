"""`Router`: the one place that fans a message out.

`publish(message)`: update the retained store, ask the topic tree who matches, and hand the
message to each subscriber's session at min(publish QoS, granted QoS). Deliveries to
subscribers that already existed carry retain=0 [MQTT-3.3.1-9]; retained messages sent in
answer to a SUBSCRIBE carry retain=1 [MQTT-3.3.1-6] [MQTT-3.3.1-8] (`send_retained`).

Retained messages are written to the store (so they survive restarts) unless `persist` is
false, which `$SYS` uses: its values are recomputed after every start.
"""

from __future__ import annotations

from ..store.base import SessionStore
from ..store.records import RetainedCleared, RetainedSet
from .message import Message
from .registry import SessionRegistry
from .retained import RetainedMessages
from .session import Session
from .stats import Stats
from .topic_tree import TopicTree


class Router:
    def __init__(self, tree: TopicTree, retained: RetainedMessages, registry: SessionRegistry,
                 store: SessionStore, stats: Stats) -> None:
        self.tree = tree
        self.retained = retained
        self.registry = registry
        self.store = store
        self.stats = stats

    def publish(self, message: Message, persist: bool = True) -> int:
        """Deliver `message` to every matching session; returns how many it was handed to."""
        if message.retain:
            self._retain(message, persist)
        targets = self.tree.match(message.topic)
        if not targets:
            return 0
        sessions = self.registry.sessions
        pub_qos = message.qos
        delivered = 0
        topic = message.topic
        for client_id, qos in targets:
            session = sessions.get(client_id)
            if session is not None:
                rules = session.rules
                if rules is not None and not rules.can_read(topic):
                    continue  # the ACL is checked per delivery, not only at SUBSCRIBE
                session.deliver(message, qos if qos < pub_qos else pub_qos, False)  # [MQTT-3.3.1-9]
                delivered += 1
        return delivered

    def _retain(self, message: Message, persist: bool) -> None:
        if not message.payload:  # [MQTT-3.3.1-10] [MQTT-3.3.1-11]
            if self.retained.clear(message.topic) and persist:
                self.store.append(RetainedCleared(message.topic))
            return
        self.retained.set(message)
        if persist:
            message.ensure_stored(self.store)
            self.store.append(RetainedSet(message.topic, message.msg_id))

    def send_retained(self, session: Session, topic_filter: str, granted_qos: int) -> int:
        """After a SUBSCRIBE: the retained messages the new filter matches, with retain=1."""
        found = self.retained.match(topic_filter)
        rules = session.rules
        if rules is not None:
            found = [message for message in found if rules.can_read(message.topic)]
        for message in found:  # [MQTT-3.3.1-6]
            qos = message.qos if message.qos < granted_qos else granted_qos
            session.deliver(message, qos, True)  # [MQTT-3.3.1-8]
        return len(found)

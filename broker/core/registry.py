"""`SessionRegistry`: client id -> `Session`, clean start, removal, expiry, restore.

Takeover itself (closing the old connection and publishing its will) is the protocol's job;
by the time `open()` runs the previous connection has let go of the session. Removing a
session also removes its subscriptions from the topic tree, so the tree never names a
client id the registry does not know, and makes it leave its shared groups: `hand_over`
(set by the router, which fans out) gives what it held for them to other members.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

from gevent.lock import Semaphore

from ..codec import SubOptions
from ..store.base import StoredState
from ..store.records import (
    IncomingQos2,
    MessageStored,
    OutgoingReleased,
    OutgoingStored,
    Record,
    RetainedSet,
    SessionClosed,
    SessionDeleted,
    SessionOpened,
    Subscribed,
)
from ..topics import parse_shared
from .message import Message
from .retained import RetainedMessages
from .session import Session, SessionEnv, queued_entry
from .topic_tree import TopicTree

SESSION_NEVER_EXPIRES = 0xFFFF_FFFF  # MQTT 5's session expiry interval for "never"

log = logging.getLogger("greenfly.registry")


class SessionRegistry:
    def __init__(self, env: SessionEnv, tree: TopicTree) -> None:
        self.env = env
        self.tree = tree
        self.sessions: dict[str, Session] = {}
        self._lock = Semaphore()  # never re-entered: open() calls _remove, not remove
        # (session, the `$share/...` filters it leaves, whether its session ends) -> how many
        # messages went to other members; set by the router.
        self.hand_over: Callable[[Session, list[str], bool], int] | None = None

    def __len__(self) -> int:
        return len(self.sessions)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self.sessions.values()))

    def get(self, client_id: str) -> Session | None:
        return self.sessions.get(client_id)

    def open(self, client_id: str, clean: bool, protocol_level: int,
             expiry: int = 0, persistent: bool | None = None) -> tuple[Session, bool]:
        """The session for a new connection and whether one was resumed (session present).

        `persistent` (default: not `clean`, as in 3.x) says whether the session outlives
        the connection; MQTT 5 decides it by the session expiry interval instead."""
        if persistent is None:
            persistent = not clean
        with self._lock:
            existing = self.sessions.get(client_id)
            if existing is not None and (clean or not existing.persistent):
                # Clean start discards; and a clean session never becomes a resumable one
                # [MQTT-3.1.2-6], even if it is still registered when its client returns.
                self._remove(existing)
                existing = None
            if existing is not None:
                existing.protocol_level = protocol_level
                existing.set_expiry(expiry, persistent)
                existing.opened()
                return existing, True
            session = Session(self.env, client_id, persistent=persistent,
                              protocol_level=protocol_level, expiry=expiry)
            self.sessions[client_id] = session
            session.opened()
            return session, False

    def remove(self, session: Session) -> None:
        """Forget a session and its subscriptions (clean session end, clean start, expiry)."""
        with self._lock:
            self._remove(session)

    def forget(self, session: Session) -> None:
        """Let go of a session without recording its end: in a cluster another node owns it
        now (its records are that node's to write), so nothing is deleted or handed over."""
        with self._lock:
            if self.sessions.get(session.client_id) is not session:
                return
            del self.sessions[session.client_id]
            for topic_filter in list(session.subscriptions):
                self.tree.unsubscribe(session.client_id, topic_filter)

    def _remove(self, session: Session) -> None:
        if self.sessions.get(session.client_id) is not session:
            return
        del self.sessions[session.client_id]
        shared = []
        for topic_filter in list(session.subscriptions):
            self.tree.unsubscribe(session.client_id, topic_filter)
            if parse_shared(topic_filter) is not None:
                shared.append(topic_filter)
        if shared and self.hand_over is not None:
            self.hand_over(session, shared, True)
        if session.persistent:
            self.env.store.append(SessionDeleted(session.client_id))

    def expire(self, default_expiry: int, now: float | None = None) -> list[str]:
        """Remove offline persistent sessions whose expiry has passed; returns their ids.

        A session's own expiry wins; otherwise `default_expiry` (0 = never)."""
        now = time.time() if now is None else now
        gone = []
        for session in list(self.sessions.values()):
            expiry = session.expiry or default_expiry
            if expiry == SESSION_NEVER_EXPIRES:
                continue
            if (session.peer is None and expiry and session.disconnected_at is not None
                    and now - session.disconnected_at >= expiry):
                self.remove(session)
                gone.append(session.client_id)
        if gone:
            self.env.stats.clients_expired += len(gone)
            log.info("expired %d persistent session(s): %s", len(gone), ", ".join(gone[:10]))
        return gone

    def restore(self, state: StoredState, retained: RetainedMessages,
                release: bool = False) -> None:
        """Rebuild sessions, subscriptions and retained messages from the store's state.

        `release`: empty `state` as it is rebuilt (each stored session and message let go of
        once its live form exists), so a restart never holds the whole of both at once."""
        messages: dict[int, Message] = {}
        stored_messages = state.messages
        take = stored_messages.pop if release else stored_messages.get

        def message(msg_id: int) -> Message | None:
            found = messages.get(msg_id)
            if found is None:
                record = take(msg_id, None)
                if record is None:
                    return None
                found = Message(record.topic, record.payload, record.qos, record.retain,
                                record.properties, record.origin, msg_id, record.received_at)
                found.stored = True
                messages[msg_id] = found
            return found

        now = time.time()
        for client_id in list(state.sessions):
            stored = state.sessions.pop(client_id) if release else state.sessions[client_id]
            session = Session(self.env, stored.client_id, persistent=True,
                              protocol_level=stored.protocol_level, expiry=stored.expiry)
            # A session whose connection was cut by a crash counts as disconnected from now.
            session.disconnected_at = stored.disconnected_at or now
            if stored.subscriptions:
                session.subscriptions = {}
            if stored.subscription_ids:
                session.subscription_ids = dict(stored.subscription_ids)
            for topic_filter, options in stored.subscriptions.items():
                opts = SubOptions.from_byte(options, 5)
                session.subscriptions[topic_filter] = opts
                self.tree.subscribe(stored.client_id, topic_filter, opts.qos, opts.no_local,
                                    opts.retain_as_published,
                                    stored.subscription_ids.get(topic_filter, 0))
            restore_owed = session.restore_owed
            for entry in stored.outgoing.values():
                msg = messages.get(entry.msg_id) or message(entry.msg_id)
                if msg is not None:
                    restore_owed(msg, entry.qos, entry.retain, entry.packet_id,
                                 entry.released, entry.sub_ids)
            session.restore_incoming(stored.incoming_qos2)
            self.sessions[stored.client_id] = session
        for msg_id in state.retained.values():
            msg = message(msg_id)
            if msg is not None:
                retained.set(msg)
        if release:
            state.retained.clear()
            stored_messages.clear()

    def snapshot_records(self, retained: RetainedMessages) -> list[Record]:
        """The live persistent state as the shortest record list that restores it.

        Taken in one go with no greenlet switch, so it is exactly the fold of every record
        appended so far: the journal writes it as its compacted form.
        """
        messages: dict[int, Message] = {}
        body: list[Record] = []
        for message in retained.all():
            if message.stored:  # $SYS values are never stored
                messages[message.msg_id] = message
                body.append(RetainedSet(message.topic, message.msg_id))
        for session in self.sessions.values():
            if session.persistent:
                body.extend(session_records(session, messages))
        head: list[Record] = [MessageStored(m.msg_id, m.topic, m.payload, m.qos, m.retain,
                                            m.origin, m.properties, m.received_at)
                              for _msg_id, m in sorted(messages.items())]
        return head + body


def session_records(session: Session, messages: dict[int, Message]) -> list[Record]:
    """One persistent session as the records that restore it (the messages it refers to
    are added to `messages`, to be written once ahead of it)."""
    cid = session.client_id
    body: list[Record] = [SessionOpened(cid, session.protocol_level, session.expiry)]
    if session.disconnected_at is not None and session.peer is None:
        body.append(SessionClosed(cid, session.disconnected_at))
    ids = session.subscription_ids
    body.extend(Subscribed(cid, topic_filter, options.to_byte(), ids.get(topic_filter, 0))
                for topic_filter, options in session.subscriptions.items())
    for packet_id, flight in session.inflight.items():
        messages[flight.message.msg_id] = flight.message
        body.append(OutgoingStored(cid, flight.message.msg_id, flight.qos, flight.retain,
                                   packet_id, flight.sub_ids))
        if flight.released:
            body.append(OutgoingReleased(cid, packet_id))
    for entry in session.queue:
        message, qos, retain, sub_ids = queued_entry(entry)
        messages[message.msg_id] = message
        body.append(OutgoingStored(cid, message.msg_id, qos, retain, 0, sub_ids))
    body.extend(IncomingQos2(cid, packet_id) for packet_id in sorted(session.incoming_qos2))
    return body

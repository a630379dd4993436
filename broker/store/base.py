"""The `SessionStore` protocol and `restore()`, the pure fold of records back into state.

`StoredState` is what a store holds: persistent sessions (subscriptions, what is owed to them
in order, inbound QoS 2 ids), the messages they reference (each stored once), and the retained
topics. `apply()` folds one record into it; `restore()` folds a whole list; `snapshot()` turns
a state back into the shortest list of records that restores it, which is what compaction
writes. Replaying `snapshot(restore(records))` gives the same state as `restore(records)`.

Records about a session that does not exist (any more) are ignored: a session deleted while
its last acknowledgements were still being written is simply gone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from .records import (
    IncomingQos2,
    IncomingReleased,
    MessageQueued,
    MessageStored,
    OutgoingDone,
    OutgoingReleased,
    OutgoingSent,
    OutgoingStored,
    OutgoingWithdrawn,
    Record,
    RetainedCleared,
    RetainedSet,
    SessionClosed,
    SessionDeleted,
    SessionOpened,
    Subscribed,
    Unsubscribed,
)


@dataclass(slots=True)
class StoredOutgoing:
    msg_id: int
    qos: int
    retain: bool
    packet_id: int = 0  # 0 while queued
    released: bool = False  # QoS 2: PUBREC received, PUBREL owed
    sub_ids: tuple[int, ...] = ()  # MQTT 5 subscription identifiers the delivery carries


@dataclass(slots=True)
class StoredSession:
    client_id: str
    protocol_level: int
    expiry: int
    disconnected_at: float | None = None
    subscriptions: dict[str, int] = field(default_factory=dict)  # filter -> options byte
    subscription_ids: dict[str, int] = field(default_factory=dict)  # of filters that have one
    incoming_qos2: set[int] = field(default_factory=set)
    # Everything owed, in delivery order, keyed by a local sequence number.
    outgoing: dict[int, StoredOutgoing] = field(default_factory=dict)
    # Indexes into `outgoing`: bookkeeping, not state, so not compared.
    _next_key: int = field(default=0, compare=False)
    _inflight: dict[int, int] = field(default_factory=dict, compare=False)  # packet id -> key
    # msg id -> key of its queued entry, or a list of keys in the rare case of several
    # (restore runs this for every queued message: no container per entry).
    _queued: dict[int, int | list[int]] = field(default_factory=dict, compare=False)

    def add_outgoing(self, entry: StoredOutgoing) -> None:
        key = self._next_key
        self._next_key += 1
        self.outgoing[key] = entry
        if entry.packet_id:
            self._inflight[entry.packet_id] = key
            return
        queued = self._queued
        earlier = queued.get(entry.msg_id)
        if earlier is None:
            queued[entry.msg_id] = key
        elif isinstance(earlier, list):
            earlier.append(key)
        else:
            queued[entry.msg_id] = [earlier, key]

    def _take_queued(self, msg_id: int) -> int | None:
        """The key of the oldest queued entry for `msg_id`, no longer indexed as queued."""
        keys = self._queued.get(msg_id)
        if keys is None:
            return None
        if isinstance(keys, list):
            key = keys.pop(0)
            if len(keys) == 1:
                self._queued[msg_id] = keys[0]
        else:
            key = keys
            del self._queued[msg_id]
        return key

    def mark_sent(self, msg_id: int, packet_id: int) -> None:
        key = self._take_queued(msg_id)
        if key is None:
            return
        self.outgoing[key].packet_id = packet_id
        self._inflight[packet_id] = key

    def withdraw(self, msg_id: int) -> None:
        key = self._take_queued(msg_id)
        if key is not None:
            del self.outgoing[key]

    def subscribe(self, topic_filter: str, options: int, subscription_id: int) -> None:
        self.subscriptions[topic_filter] = options
        if subscription_id:
            self.subscription_ids[topic_filter] = subscription_id
        else:
            self.subscription_ids.pop(topic_filter, None)

    def unsubscribe(self, topic_filter: str) -> None:
        self.subscriptions.pop(topic_filter, None)
        self.subscription_ids.pop(topic_filter, None)

    def mark_released(self, packet_id: int) -> None:
        key = self._inflight.get(packet_id)
        if key is not None:
            self.outgoing[key].released = True

    def mark_done(self, packet_id: int) -> None:
        key = self._inflight.pop(packet_id, None)
        if key is not None:
            del self.outgoing[key]


@dataclass(slots=True)
class StoredState:
    sessions: dict[str, StoredSession] = field(default_factory=dict)
    messages: dict[int, MessageStored] = field(default_factory=dict)
    retained: dict[str, int] = field(default_factory=dict)  # topic -> msg id
    max_msg_id: int = 0

    def apply(self, record: Record) -> None:
        """Fold one record into the state; records about a session that does not exist
        (any more) are ignored.

        The cases are tried in order and each costs an isinstance check (a match allocates
        too: more than the `type(record) is X` chain this replaced), so the most frequent go
        first: a journal is mostly `MessageQueued` and `OutgoingDone`, a compacted one
        `MessageStored` and `OutgoingStored`.
        """
        match record:
            case MessageQueued():
                # What `MessageStored` and `OutgoingStored` do, without matching them again.
                self.messages[record.msg_id] = record.message()
                if record.msg_id > self.max_msg_id:
                    self.max_msg_id = record.msg_id
                if (session := self.sessions.get(record.client_id)) is not None:
                    session.add_outgoing(StoredOutgoing(record.msg_id, record.out_qos,
                                                        record.out_retain, record.packet_id,
                                                        sub_ids=record.sub_ids))
            case MessageStored():
                self.messages[record.msg_id] = record
                if record.msg_id > self.max_msg_id:
                    self.max_msg_id = record.msg_id
            case OutgoingStored():
                if (session := self.sessions.get(record.client_id)) is not None:
                    session.add_outgoing(StoredOutgoing(record.msg_id, record.qos, record.retain,
                                                        record.packet_id, sub_ids=record.sub_ids))
            case OutgoingDone():
                if (session := self.sessions.get(record.client_id)) is not None:
                    session.mark_done(record.packet_id)
            case OutgoingSent():
                if (session := self.sessions.get(record.client_id)) is not None:
                    session.mark_sent(record.msg_id, record.packet_id)
            case OutgoingReleased():
                if (session := self.sessions.get(record.client_id)) is not None:
                    session.mark_released(record.packet_id)
            case IncomingQos2():
                if (session := self.sessions.get(record.client_id)) is not None:
                    session.incoming_qos2.add(record.packet_id)
            case IncomingReleased():
                if (session := self.sessions.get(record.client_id)) is not None:
                    session.incoming_qos2.discard(record.packet_id)
            case SessionOpened():
                session = self.sessions.get(record.client_id)
                if session is None:
                    self.sessions[record.client_id] = StoredSession(
                        record.client_id, record.protocol_level, record.expiry)
                else:
                    session.protocol_level = record.protocol_level
                    session.expiry = record.expiry
                    session.disconnected_at = None
            case SessionClosed():
                if (session := self.sessions.get(record.client_id)) is not None:
                    session.disconnected_at = record.at
            case Subscribed():
                if (session := self.sessions.get(record.client_id)) is not None:
                    session.subscribe(record.topic_filter, record.options,
                                      record.subscription_id)
            case Unsubscribed():
                if (session := self.sessions.get(record.client_id)) is not None:
                    session.unsubscribe(record.topic_filter)
            case SessionDeleted():
                self.sessions.pop(record.client_id, None)
            case RetainedSet():
                self.retained[record.topic] = record.msg_id
            case RetainedCleared():
                self.retained.pop(record.topic, None)
            case OutgoingWithdrawn():
                if (session := self.sessions.get(record.client_id)) is not None:
                    session.withdraw(record.msg_id)
            case _:
                raise TypeError(f"not a store record: {record!r}")

    def referenced_messages(self) -> set[int]:
        live = set(self.retained.values())
        for session in self.sessions.values():
            live.update(entry.msg_id for entry in session.outgoing.values())
        return live

    def drop_unreferenced(self) -> int:
        """Forget messages nothing refers to any more; returns how many."""
        live = self.referenced_messages()
        dead = [msg_id for msg_id in self.messages if msg_id not in live]
        for msg_id in dead:
            del self.messages[msg_id]
        return len(dead)


def restore(records: Iterable[Record]) -> StoredState:
    """Fold `records` into the state they describe."""
    state = StoredState()
    for record in records:
        state.apply(record)
    state.drop_unreferenced()
    return state


def snapshot(state: StoredState) -> list[Record]:
    """The shortest record list that restores `state` (what compaction writes)."""
    live = state.referenced_messages()
    out: list[Record] = [state.messages[msg_id] for msg_id in sorted(live)
                         if msg_id in state.messages]
    for topic, msg_id in state.retained.items():
        out.append(RetainedSet(topic, msg_id))
    for session in state.sessions.values():
        cid = session.client_id
        out.append(SessionOpened(cid, session.protocol_level, session.expiry))
        if session.disconnected_at is not None:
            out.append(SessionClosed(cid, session.disconnected_at))
        ids = session.subscription_ids
        out.extend(Subscribed(cid, f, o, ids.get(f, 0)) for f, o in session.subscriptions.items())
        for entry in session.outgoing.values():
            out.append(OutgoingStored(cid, entry.msg_id, entry.qos, entry.retain, entry.packet_id,
                                      entry.sub_ids))
            if entry.released:
                out.append(OutgoingReleased(cid, entry.packet_id))
        out.extend(IncomingQos2(cid, pid) for pid in sorted(session.incoming_qos2))
    return out


class SessionStore(Protocol):
    """Where sessions and retained messages outlive a connection (and, for a journal, the
    process). Appends never block; `wait_durable` blocks only the calling greenlet."""

    seq: int  # number of the last record appended
    failure: str | None  # why records cannot be made durable right now, or None
    # True when every session's records must stand alone (a cluster keeps one log per
    # session in Redis): a message owed to several sessions is then written whole to each,
    # `MessageQueued` with the same id, never `OutgoingStored` by reference.
    self_contained: bool

    def load(self) -> StoredState:
        """The state to start from; called once, before any listener opens."""
        ...

    def append(self, record: Record) -> int:
        """Record a fact; returns its sequence number."""
        ...

    def new_message_id(self) -> int:
        ...

    def is_durable(self, seq: int) -> bool:
        """True when the record numbered `seq` needs no wait before an acknowledgement."""
        ...

    def wait_durable(self, seq: int) -> None:
        """Block this greenlet until record `seq` is as durable as the policy promises."""
        ...

    def on_durable(self, seq: int, callback: Callable[[], None]) -> None:
        """Call `callback` (no arguments, must not block) once record `seq` is durable, or
        once a write failed (`failure` is then set): waiting without a greenlet."""
        ...

    def close(self) -> None:
        """Flush everything and release the files."""
        ...

"""The session store: `restore()` folds records into state, `snapshot()` writes it back, and
`MemoryStore` compacts with the two without changing what `load()` returns.

States are compared through `view()`, which keeps what a restart depends on (sessions, what is
owed to each and in which order, messages, retained topics) and leaves out bookkeeping that
legitimately differs after a snapshot (internal sequence keys, the highest message id seen).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.codec.properties import NO_PROPERTIES
from broker.store import memory
from broker.store.base import StoredState, restore, snapshot
from broker.store.memory import MemoryStore
from broker.store.records import (
    IncomingQos2,
    IncomingReleased,
    MessageQueued,
    MessageStored,
    OutgoingDone,
    OutgoingReleased,
    OutgoingSent,
    OutgoingStored,
    OutgoingWithdrawn,
    RetainedCleared,
    RetainedSet,
    SessionClosed,
    SessionDeleted,
    SessionOpened,
    Subscribed,
    Unsubscribed,
)

LOGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def view(state: StoredState) -> dict[str, Any]:
    return {
        "sessions": {
            cid: {
                "level": s.protocol_level,
                "expiry": s.expiry,
                "disconnected_at": s.disconnected_at,
                "subscriptions": dict(s.subscriptions),
                **({"subscription_ids": dict(s.subscription_ids)} if s.subscription_ids
                   else {}),
                "incoming_qos2": sorted(s.incoming_qos2),
                "outgoing": [(e.msg_id, e.qos, e.retain, e.packet_id, e.released)
                             for e in s.outgoing.values()],
            }
            for cid, s in state.sessions.items()
        },
        "messages": dict(state.messages),
        "retained": dict(state.retained),
    }


M1 = MessageStored(1, "t/1", b"one", 1, False, "pub")
M2 = MessageStored(2, "t/2", b"two", 2, False, "pub", {"user_property": [("k", "v")]})
M3 = MessageStored(3, "r", b"kept", 0, True)
M4 = MessageStored(4, "nobody", b"unreferenced", 1, False)
M5 = MessageStored(5, "r2", b"cleared", 0, True)

RECORDS = [
    SessionOpened("a", 4, 0),
    SessionOpened("b", 3, 3600),
    Subscribed("a", "t/#", 1),
    Subscribed("b", "t/+", 2),
    Subscribed("a", "x", 0),
    Unsubscribed("a", "x"),
    # message 1 is stored once and owed to both sessions
    M1,
    OutgoingStored("a", 1, 1, False, 1),  # straight into flight as packet id 1
    OutgoingStored("b", 1, 1, False, 0),  # queued
    M2,
    OutgoingStored("b", 2, 2, False, 0),  # queued behind message 1
    OutgoingSent("b", 1, 7),  # queued -> sent as packet id 7
    OutgoingSent("b", 2, 8),
    OutgoingReleased("b", 8),  # PUBREC for 8: PUBREL owed
    OutgoingDone("a", 1),  # a acknowledged message 1
    IncomingQos2("a", 5),
    IncomingQos2("a", 6),
    IncomingReleased("a", 5),
    SessionClosed("b", 1000.0),
    M3,
    RetainedSet("r", 3),
    M4,  # referenced by nothing: dropped
    M5,
    RetainedSet("r2", 5),
    RetainedCleared("r2"),  # message 5 is referenced by nothing any more: dropped
    # records about a session that does not exist are ignored
    Subscribed("ghost", "t/#", 2),
    OutgoingStored("ghost", 1, 1, False, 3),
    IncomingQos2("ghost", 9),
    SessionClosed("ghost", 5.0),
    OutgoingDone("ghost", 3),
]

EXPECTED = {
    "sessions": {
        "a": {"level": 4, "expiry": 0, "disconnected_at": None, "subscriptions": {"t/#": 1},
              "incoming_qos2": [6], "outgoing": []},
        "b": {"level": 3, "expiry": 3600, "disconnected_at": 1000.0,
              "subscriptions": {"t/+": 2}, "incoming_qos2": [],
              "outgoing": [(1, 1, False, 7, False), (2, 2, False, 8, True)]},
    },
    "messages": {1: M1, 2: M2, 3: M3},
    "retained": {"r": 3},
}


def test_restore_folds_hand_written_records_into_sessions_messages_and_retained():
    assert view(restore(RECORDS)) == EXPECTED


def test_restore_keeps_a_message_owed_to_two_sessions_once():
    state = restore(RECORDS[:9])
    assert state.messages == {1: M1}
    owed = [(cid, [e.msg_id for e in s.outgoing.values()]) for cid, s in state.sessions.items()]
    assert owed == [("a", [1]), ("b", [1])]
    assert [r for r in snapshot(state) if isinstance(r, MessageStored)] == [M1]


def test_restore_queued_sent_released_done_ends_the_entry():
    records = [SessionOpened("c", 4, 0), M1,
               OutgoingStored("c", 1, 2, True, 0)]
    assert view(restore(records))["sessions"]["c"]["outgoing"] == [(1, 2, True, 0, False)]
    records.append(OutgoingSent("c", 1, 42))
    assert view(restore(records))["sessions"]["c"]["outgoing"] == [(1, 2, True, 42, False)]
    records.append(OutgoingReleased("c", 42))
    assert view(restore(records))["sessions"]["c"]["outgoing"] == [(1, 2, True, 42, True)]
    records.append(OutgoingDone("c", 42))
    state = restore(records)
    assert view(state)["sessions"]["c"]["outgoing"] == []
    assert state.messages == {}  # nothing owes message 1 any more


def test_message_queued_restores_the_message_and_its_first_owner():
    queued = MessageQueued(1, "t/1", b"one", 1, False, "pub", NO_PROPERTIES, "c", 1, False, 4)
    records = [SessionOpened("c", 4, 0), SessionOpened("d", 4, 0), queued,
               OutgoingStored("d", 1, 1, False, 0)]
    state = restore(records)
    assert state.messages == {1: MessageStored(1, "t/1", b"one", 1, False, "pub")}
    assert state.max_msg_id == 1
    assert view(state)["sessions"]["c"]["outgoing"] == [(1, 1, False, 4, False)]
    assert view(state)["sessions"]["d"]["outgoing"] == [(1, 1, False, 0, False)]
    records += [OutgoingDone("c", 4), OutgoingSent("d", 1, 9), OutgoingDone("d", 9)]
    assert restore(records).messages == {}  # nobody owes it any more
    # Its owner unknown (deleted before): the message is kept only while referenced.
    assert restore([queued]).messages == {}


def test_restore_sends_the_oldest_queued_copy_first_and_keeps_delivery_order():
    records = [SessionOpened("c", 4, 0), M1, M2,
               OutgoingStored("c", 1, 1, False, 0),
               OutgoingStored("c", 2, 1, False, 0),
               OutgoingStored("c", 1, 1, True, 0),  # the same message again (a retained copy)
               OutgoingSent("c", 1, 10)]
    assert view(restore(records))["sessions"]["c"]["outgoing"] == [
        (1, 1, False, 10, False), (2, 1, False, 0, False), (1, 1, True, 0, False)]
    records += [OutgoingDone("c", 10), OutgoingSent("c", 1, 11)]
    assert view(restore(records))["sessions"]["c"]["outgoing"] == [
        (2, 1, False, 0, False), (1, 1, True, 11, False)]


def test_restore_ignores_acks_for_unknown_packet_ids_and_unqueued_messages():
    records = [SessionOpened("c", 4, 0), M1, OutgoingStored("c", 1, 1, False, 3),
               OutgoingDone("c", 99), OutgoingReleased("c", 98), OutgoingSent("c", 2, 4)]
    assert view(restore(records))["sessions"]["c"]["outgoing"] == [(1, 1, False, 3, False)]


def test_session_deleted_forgets_everything_and_a_new_one_starts_empty():
    records = [*RECORDS, SessionDeleted("b"), OutgoingDone("b", 7), SessionOpened("b", 4, 10)]
    state = restore(records)
    assert view(state)["sessions"]["b"] == {
        "level": 4, "expiry": 10, "disconnected_at": None, "subscriptions": {},
        "incoming_qos2": [], "outgoing": []}
    assert sorted(state.messages) == [3]  # 1 and 2 were owed only to the deleted b


def test_session_reopened_resumes_and_is_connected_again():
    records = [SessionOpened("c", 4, 0), Subscribed("c", "a", 1), SessionClosed("c", 7.5),
               SessionOpened("c", 3, 60)]
    assert view(restore(records))["sessions"]["c"] == {
        "level": 3, "expiry": 60, "disconnected_at": None, "subscriptions": {"a": 1},
        "incoming_qos2": [], "outgoing": []}


def test_subscription_identifiers_are_kept_replaced_and_dropped_with_their_filter():
    records = [SessionOpened("c", 5, 60), Subscribed("c", "a", 0x05, 7),
               Subscribed("c", "b", 0x01, 9), Subscribed("c", "b", 0x01),  # again, with none
               Subscribed("c", "x", 0x02, 3), Unsubscribed("c", "x")]
    state = restore(records)
    session = state.sessions["c"]
    assert session.subscriptions == {"a": 0x05, "b": 0x01}
    assert session.subscription_ids == {"a": 7}
    assert Subscribed("c", "a", 0x05, 7) in snapshot(state)
    assert restore(snapshot(state)) == state


def test_withdrawn_drops_the_oldest_queued_copy_and_leaves_flight_alone():
    records = [SessionOpened("c", 5, 60), M1, M2,
               OutgoingStored("c", 1, 1, False, 4),  # message 1 in flight
               OutgoingStored("c", 1, 1, False, 0),  # and queued twice more
               OutgoingStored("c", 2, 2, False, 0),
               OutgoingStored("c", 1, 1, True, 0),
               OutgoingWithdrawn("c", 1), OutgoingWithdrawn("c", 9)]  # 9: not queued
    owed = [(e.msg_id, e.retain, e.packet_id)
            for e in restore(records).sessions["c"].outgoing.values()]
    assert owed == [(1, False, 4), (2, False, 0), (1, True, 0)]


def test_retained_set_then_cleared_drops_the_message():
    state = restore([M3, RetainedSet("r", 3), RetainedCleared("r")])
    assert state.retained == {}
    assert state.messages == {}


def test_retained_set_twice_keeps_only_the_newer_message():
    newer = MessageStored(9, "r", b"newer", 1, True)
    state = restore([M3, RetainedSet("r", 3), newer, RetainedSet("r", 9)])
    assert state.retained == {"r": 9}
    assert state.messages == {9: newer}


def test_apply_refuses_what_is_not_a_record():
    with pytest.raises(TypeError):
        StoredState().apply(object())


def test_snapshot_restores_the_same_state():
    state = restore(RECORDS)
    records = snapshot(state)
    assert view(restore(records)) == EXPECTED
    assert snapshot(restore(records)) == records  # a snapshot of a snapshot changes nothing
    assert len(records) < len(RECORDS)


def test_snapshot_of_the_hand_written_log_is_exactly_the_live_facts():
    assert snapshot(restore(RECORDS)) == [
        M1, M2, M3,
        RetainedSet("r", 3),
        SessionOpened("a", 4, 0),
        Subscribed("a", "t/#", 1),
        IncomingQos2("a", 6),
        SessionOpened("b", 3, 3600),
        SessionClosed("b", 1000.0),
        Subscribed("b", "t/+", 2),
        OutgoingStored("b", 1, 1, False, 7),
        OutgoingStored("b", 2, 2, False, 8),
        OutgoingReleased("b", 8),
    ]


# ------------------------------------------------------------------------------ valid logs

CLIENTS = ["a", "b", "c"]
TOPICS = ["t", "u", "v/w"]

op_st = st.one_of(
    st.tuples(st.just("open"), st.sampled_from(CLIENTS), st.booleans()),
    st.tuples(st.just("close"), st.sampled_from(CLIENTS), st.integers(0, 10)),
    st.tuples(st.just("delete"), st.sampled_from(CLIENTS)),
    st.tuples(st.just("subscribe"), st.sampled_from(CLIENTS), st.sampled_from(TOPICS),
              st.integers(0, 2), st.sampled_from([0, 0, 7, 268_435_455])),
    st.tuples(st.just("unsubscribe"), st.sampled_from(CLIENTS), st.sampled_from(TOPICS)),
    st.tuples(st.just("publish"), st.sampled_from(TOPICS), st.integers(1, 2), st.booleans(),
              st.lists(st.sampled_from(CLIENTS), unique=True), st.binary(max_size=3)),
    st.tuples(st.just("send_retained"), st.sampled_from(CLIENTS), st.sampled_from(TOPICS)),
    st.tuples(st.just("send"), st.sampled_from(CLIENTS)),
    st.tuples(st.just("withdraw"), st.sampled_from(CLIENTS), st.integers(0, 3)),
    st.tuples(st.just("ack"), st.sampled_from(CLIENTS), st.integers(0, 3)),
    st.tuples(st.just("in_qos2"), st.sampled_from(CLIENTS), st.integers(1, 4)),
    st.tuples(st.just("in_release"), st.sampled_from(CLIENTS), st.integers(1, 4)),
    st.tuples(st.just("clear_retained"), st.sampled_from(TOPICS)),
    st.tuples(st.just("unknown_client"), st.integers(1, 3)),
)


class _Broker:
    """Just enough of a broker to write logs the real one could write: a message is stored
    immediately before the records that refer to it, and acks name packets in flight."""

    def __init__(self) -> None:
        self.records: list[Any] = []
        self.sessions: dict[str, dict[str, Any]] = {}
        self.retained: dict[str, int] = {}
        self.next_msg = 0

    def emit(self, record: Any) -> None:
        self.records.append(record)

    def run(self, op: tuple) -> None:  # one branch per kind of op
        kind, *args = op
        if kind == "open":
            cid, clean = args
            if clean and cid in self.sessions:
                self.emit(SessionDeleted(cid))
                del self.sessions[cid]
            self.sessions.setdefault(cid, {"queued": [], "inflight": {}, "next_pid": 1})
            self.emit(SessionOpened(cid, 4, 0))
        elif kind == "close" and args[0] in self.sessions:
            self.emit(SessionClosed(args[0], float(args[1])))
        elif kind == "delete" and args[0] in self.sessions:
            self.emit(SessionDeleted(args[0]))
            del self.sessions[args[0]]
        elif kind == "subscribe" and args[0] in self.sessions:
            self.emit(Subscribed(*args))
        elif kind == "unsubscribe" and args[0] in self.sessions:
            self.emit(Unsubscribed(*args))
        elif kind == "publish":
            topic, qos, retain, targets, payload = args
            self.next_msg += 1
            msg_id = self.next_msg
            owners = [cid for cid in targets if cid in self.sessions]
            if owners and not retain:  # the message and its first owner in one record
                first, *others = owners
                self.emit(MessageQueued(msg_id, topic, payload, qos, retain, "", NO_PROPERTIES,
                                        first, qos, False, 0))
            else:
                self.emit(MessageStored(msg_id, topic, payload, qos, retain))
                others = owners
            for cid in others:
                self.emit(OutgoingStored(cid, msg_id, qos, False, 0))
            for cid in owners:
                self.sessions[cid]["queued"].append((msg_id, qos))
            if retain:
                if payload:
                    self.retained[topic] = msg_id
                    self.emit(RetainedSet(topic, msg_id))
                elif self.retained.pop(topic, None) is not None:
                    self.emit(RetainedCleared(topic))
        elif kind == "send_retained":
            cid, topic = args
            if cid in self.sessions and topic in self.retained:
                session = self.sessions[cid]
                pid = session["next_pid"]
                session["next_pid"] += 1
                self.emit(OutgoingStored(cid, self.retained[topic], 1, True, pid))
                session["inflight"][pid] = 1
        elif kind == "send" and args[0] in self.sessions and self.sessions[args[0]]["queued"]:
            session = self.sessions[args[0]]
            msg_id, qos = session["queued"].pop(0)
            pid = session["next_pid"]
            session["next_pid"] += 1
            session["inflight"][pid] = qos
            self.emit(OutgoingSent(args[0], msg_id, pid))
        elif kind == "withdraw" and args[0] in self.sessions and self.sessions[args[0]]["queued"]:
            # A shared group takes back a queued message (the oldest copy of that message).
            cid, which = args
            queued = self.sessions[cid]["queued"]
            msg_id = queued[which % len(queued)][0]
            queued.pop(next(i for i, entry in enumerate(queued) if entry[0] == msg_id))
            self.emit(OutgoingWithdrawn(cid, msg_id))
        elif kind == "ack" and args[0] in self.sessions and self.sessions[args[0]]["inflight"]:
            cid, which = args
            inflight = self.sessions[cid]["inflight"]
            pid = sorted(inflight)[which % len(inflight)]
            if inflight[pid] == 2:  # PUBREC first, PUBCOMP later
                self.emit(OutgoingReleased(cid, pid))
                inflight[pid] = "released"
            else:
                self.emit(OutgoingDone(cid, pid))
                del inflight[pid]
        elif kind == "in_qos2" and args[0] in self.sessions:
            self.emit(IncomingQos2(*args))
        elif kind == "in_release" and args[0] in self.sessions:
            self.emit(IncomingReleased(*args))
        elif kind == "clear_retained" and self.retained.pop(args[0], None) is not None:
            self.emit(RetainedCleared(args[0]))
        elif kind == "unknown_client":
            self.emit(Subscribed("nobody", "t", 1))
            self.emit(OutgoingDone("nobody", args[0]))


def valid_log(ops: list[tuple]) -> list[Any]:
    broker = _Broker()
    for op in ops:
        broker.run(op)
    return broker.records


logs = st.lists(op_st, max_size=60).map(valid_log)


@LOGS
@given(records=logs)
def test_snapshot_of_any_valid_log_restores_the_same_state(records):
    state = restore(records)
    compact = snapshot(state)
    assert view(restore(compact)) == view(state)
    assert snapshot(restore(compact)) == compact
    # A snapshot writes a MessageQueued of the log as its two facts (stored, owed).
    assert len(compact) <= len(records) + sum(type(r) is MessageQueued for r in records)


@LOGS
@given(records=logs)
def test_every_owed_message_of_a_valid_log_is_restored(records):
    state = restore(records)
    for session in state.sessions.values():
        for entry in session.outgoing.values():
            assert entry.msg_id in state.messages
    for msg_id in state.retained.values():
        assert msg_id in state.messages


# ------------------------------------------------------------------------------ MemoryStore

def _filler(n: int) -> list[Any]:
    """`n` records that cancel out: they grow the log but not the live state."""
    out = []
    for i in range(n):
        out.append(IncomingQos2("a", 1) if i % 2 == 0 else IncomingReleased("a", 1))
    return out


def test_memory_store_compaction_keeps_the_state():
    store = MemoryStore()
    all_records = [*RECORDS, *_filler(12_000)]
    for record in all_records:
        store.append(record)
    assert store.seq == len(all_records)
    assert len(store.records()) < len(all_records) // 4, "the log was never compacted"
    assert view(store.load()) == EXPECTED == view(restore(all_records))
    before = view(store.load())
    store.compact()
    assert view(store.load()) == before
    assert store.records() == snapshot(restore(all_records))


def test_memory_store_compaction_right_after_a_message_keeps_it_for_its_references():
    # The broker appends MessageStored and then the records that refer to it. Compacting in
    # between must not drop the message as unreferenced.
    store = MemoryStore()
    store.append(SessionOpened("a", 4, 0))
    for record in _filler(memory._COMPACT_MINIMUM - 1):
        store.append(record)
    assert len(store.records()) == memory._COMPACT_MINIMUM  # the next append compacts
    msg_id = store.new_message_id()
    message = MessageStored(msg_id, "t", b"payload", 1, False)
    store.append(message)
    store.append(OutgoingStored("a", msg_id, 1, False, 1))
    store.append(MessageStored(store.new_message_id(), "r", b"retained", 0, True))
    store.append(RetainedSet("r", msg_id + 1))
    state = store.load()
    assert view(state)["sessions"]["a"]["outgoing"] == [(msg_id, 1, False, 1, False)]
    assert state.messages[msg_id] == message
    assert state.retained == {"r": msg_id + 1}
    assert msg_id + 1 in state.messages


@LOGS
@given(records=logs)
def test_memory_store_compacting_at_any_point_loads_the_same_state(records):
    expected = view(restore(records))
    original = memory._COMPACT_MINIMUM, memory._COMPACT_FACTOR
    memory._COMPACT_MINIMUM, memory._COMPACT_FACTOR = 0, 1  # compact after every append
    try:
        store = MemoryStore()
        for record in records:
            store.append(record)
    finally:
        memory._COMPACT_MINIMUM, memory._COMPACT_FACTOR = original
    assert store.seq == len(records)
    assert view(store.load()) == expected


def test_memory_store_never_reuses_a_message_id_after_compaction():
    store = MemoryStore()
    ids = [store.new_message_id() for _ in range(3)]
    for msg_id in ids:
        store.append(MessageStored(msg_id, "t", b"x", 1, False))  # referenced by nothing
    store.compact()
    store.load()
    assert store.new_message_id() == 4
    assert ids == [1, 2, 3]


def test_memory_store_is_always_durable():
    store = MemoryStore()
    seq = store.append(SessionOpened("a", 4, 0))
    assert seq == 1 == store.seq
    assert store.is_durable(seq) is True
    assert store.wait_durable(seq) is None

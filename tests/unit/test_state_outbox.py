"""Outbox without a socket: acknowledgements held until their records are durable, order kept
behind them, QoS 0 dropped (and counted) for a client that does not read, and the counters
of what was written.

Real connections of the in-process harness (tests/support/inprocess.py) on a store whose
commits the test makes happen.
"""

from __future__ import annotations

from collections.abc import Callable

import gevent
import pytest
from support.inprocess import InProcessBroker

from broker.codec import (
    ConnAck,
    PingReq,
    PingResp,
    PubAck,
    Publish,
    PubRec,
    SubAck,
    SubOptions,
    Subscribe,
)
from broker.errors import ReasonCode
from broker.store.memory import MemoryStore


class CommitStore(MemoryStore):
    """A memory store whose records become durable only when the test commits them, as the
    journal's group commit does after its write and fsync."""

    def __init__(self) -> None:
        super().__init__()
        self.durable_seq = 0
        self._waiting: list[tuple[int, Callable[[], None]]] = []

    def is_durable(self, seq: int) -> bool:
        return seq <= self.durable_seq

    def on_durable(self, seq: int, callback: Callable[[], None]) -> None:
        if seq <= self.durable_seq:
            callback()
        else:
            self._waiting.append((seq, callback))

    def commit(self) -> None:
        self.durable_seq = self.seq
        waiting, self._waiting = self._waiting, []
        for _seq, callback in waiting:
            callback()

    def fail(self, why: str) -> None:
        self.failure = why
        waiting, self._waiting = self._waiting, []
        for _seq, callback in waiting:
            callback()


@pytest.fixture
def store() -> CommitStore:
    return CommitStore()


@pytest.fixture
def broker(store) -> InProcessBroker:
    return InProcessBroker(store=store)


def persistent_subscriber(broker, store, qos: int = 1):
    sub = broker.connect("sub", clean=False)
    store.commit()
    assert sub.received() == [ConnAck(ReasonCode.SUCCESS, False)]
    sub.send(Subscribe(1, (("t/#", SubOptions(qos)),)))
    store.commit()
    assert sub.received() == [SubAck(1, (qos,))]
    return sub


def test_connack_of_a_persistent_session_waits_for_its_record(broker, store):
    client = broker.connect("dev", clean=False)
    assert client.received() == []
    store.commit()
    assert client.received() == [ConnAck(ReasonCode.SUCCESS, False)]


def test_puback_waits_for_the_record_and_what_follows_waits_behind_it(broker, store):
    sub = persistent_subscriber(broker, store)
    pub = broker.connected("pub")  # a clean session: its CONNACK waits for nothing
    pub.send(PingReq(), Publish("t/1", b"m", 1, packet_id=4), PingReq())
    assert pub.received() == [PingResp()]  # written before the marker
    assert sub.received() == [Publish("t/1", b"m", 1, packet_id=1)]  # deliveries do not wait
    store.commit()
    assert pub.received() == [PubAck(4), PingResp()]  # released in order


def test_one_commit_releases_every_waiting_acknowledgement(broker, store):
    persistent_subscriber(broker, store, qos=2)
    pub = broker.connected("pub")
    pub.send(Publish("t/1", b"a", 1, packet_id=1), Publish("t/2", b"b", 2, packet_id=2),
             Publish("t/3", b"c", 1, packet_id=3))
    assert pub.received() == []
    store.commit()
    assert pub.received() == [PubAck(1), PubRec(2), PubAck(3)]


def test_acknowledgements_of_publishes_nobody_keeps_do_not_wait(broker, store):
    pub = broker.connected("pub")
    pub.send(Publish("t/1", b"m", 1, packet_id=4))
    assert pub.received() == [PubAck(4)]  # no persistent session: nothing to write


def test_a_failed_store_closes_the_connection_without_the_acknowledgement(broker, store):
    persistent_subscriber(broker, store)
    pub = broker.connected("pub")
    pub.send(Publish("t/1", b"m", 1, packet_id=4))
    store.fail("disk full")
    broker.flush()
    gevent.sleep(0)  # the outbox hands the close to a greenlet: it may not block the hub
    assert pub.closed is not None and "store failure" in pub.closed.text
    assert pub.received() == []  # a v3.1.1 client without PUBACK sends it again
    assert pub.transport.closed_with == [ReasonCode.UNSPECIFIED_ERROR]


def test_qos0_is_dropped_and_counted_when_the_outbox_is_full(store):
    # each QoS 0 PUBLISH below is 8 bytes: three fill 24, the fourth and fifth are dropped
    broker = InProcessBroker("[limits]\nmax_outbox_bytes = 24\n", store=store)
    sub = persistent_subscriber(broker, store, qos=1)
    pub = broker.connected("pub")
    pub.send(*(Publish("t/0", bytes([i])) for i in range(5)),
             Publish("t/1", b"q1", 1, packet_id=1))
    assert broker.stats.publish_dropped == 2
    received = sub.received()
    assert [(p.payload, p.qos) for p in received] == \
        [(b"\x00", 0), (b"\x01", 0), (b"\x02", 0), (b"q1", 1)]  # QoS 1 is never dropped


def test_counters_say_what_was_written(broker):
    sub = broker.connected("sub")
    sub.send(Subscribe(1, (("t", SubOptions(1)),)))
    sub.received()
    sent_before = broker.stats.messages_sent
    broker.connected("pub").send(Publish("t", b"12345", 1, packet_id=1), Publish("t", b"678"))
    packets = sub.received()
    assert len(packets) == 2
    assert broker.stats.publish_sent == 2
    assert broker.stats.publish_bytes_sent == 8
    # CONNACK and PUBACK to the publisher, two PUBLISHes to the subscriber
    assert broker.stats.messages_sent - sent_before == 4
    assert broker.stats.bytes_sent == sum(len(c.transport.data) for c in broker.clients)


def test_nothing_is_written_after_the_connection_closed(broker):
    sub = broker.connected("sub")
    sub.send(Subscribe(1, (("t", SubOptions(0)),)))
    sub.received()
    sub.lose()
    broker.connected("pub").send(Publish("t", b"late"))
    broker.flush()
    assert sub.received() == []
    assert broker.stats.publish_sent == 0

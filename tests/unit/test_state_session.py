"""Session without a socket: QoS 1 and 2 both ways, DUP resends after a reconnect, the
in-flight window and the queue limits, with every drop counted.

Real connections of the in-process harness (tests/support/inprocess.py); assertions are on
what the clients read back and on the broker's counters.
"""

from __future__ import annotations

import pytest
from support.inprocess import NO_PERSISTENCE, InProcessBroker

from broker.codec import (
    MQTT_5,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    SubOptions,
    Subscribe,
)
from broker.errors import ReasonCode


def make_broker(limits: str = "") -> InProcessBroker:
    return InProcessBroker(NO_PERSISTENCE + "[limits]\n" + limits)


@pytest.fixture
def broker() -> InProcessBroker:
    return make_broker()


def subscribe(client, topic_filter: str, qos: int) -> None:
    client.send(Subscribe(1, ((topic_filter, SubOptions(qos)),)))
    assert client.received() == [SubAck(1, (qos,))]


def persistent_subscriber(broker, client_id: str = "sub", qos: int = 2, **fields):
    client = broker.connected(client_id, clean=False, **fields)
    subscribe(client, "t/#", qos)
    return client


def publish(broker, *packets) -> None:
    broker.connected("pub").send(*packets)


def ids_and_flags(packets) -> list[tuple]:
    return [(type(p).__name__, p.packet_id, getattr(p, "dup", None), getattr(p, "qos", None))
            for p in packets]


# -- QoS 1 and 2 from a publisher --------------------------------------------------------------


def test_qos1_publish_is_acknowledged_and_forwarded_once(broker):
    sub = persistent_subscriber(broker, qos=1)
    pub = broker.connected("pub")
    pub.send(Publish("t/a", b"m", 1, packet_id=10))
    assert pub.received() == [PubAck(10)]
    assert sub.received() == [Publish("t/a", b"m", 1, packet_id=1)]
    assert broker.stats.publish_received == 1


def test_qos1_publish_resent_with_dup_is_forwarded_again(broker):
    sub = persistent_subscriber(broker, qos=1)
    pub = broker.connected("pub")
    pub.send(Publish("t/a", b"m", 1, packet_id=10),
             Publish("t/a", b"m", 1, dup=True, packet_id=10))
    assert pub.received() == [PubAck(10), PubAck(10)]
    assert len(sub.received()) == 2  # QoS 1 is at least once: no duplicate detection


def test_qos2_publish_is_forwarded_once_however_often_it_is_resent(broker):
    sub = persistent_subscriber(broker, qos=2)
    pub = broker.connected("pub", clean=False)
    pub.send(Publish("t/a", b"once", 2, packet_id=7))
    assert pub.received() == [PubRec(7)]
    pub.send(Publish("t/a", b"once", 2, dup=True, packet_id=7))  # PUBREC lost, say
    assert pub.received() == [PubRec(7)]  # [MQTT-4.3.3-2]
    pub.lose()
    pub = broker.connected("pub", clean=False)
    pub.send(Publish("t/a", b"once", 2, dup=True, packet_id=7))
    assert pub.received() == [PubRec(7)]
    pub.send(PubRel(7))
    assert pub.received() == [PubComp(7)]
    assert sub.received() == [Publish("t/a", b"once", 2, packet_id=1)]
    # After PUBREL the id is free again: a new message under it is a new message.
    pub.send(Publish("t/a", b"twice", 2, packet_id=7), PubRel(7))
    assert pub.received() == [PubRec(7), PubComp(7)]
    assert [p.payload for p in sub.received()] == [b"twice"]


def test_pubrel_for_an_unknown_id_is_still_completed(broker):
    pub = broker.connected("pub")
    pub.send(PubRel(99))
    assert pub.received() == [PubComp(99)]  # 3.1.1 has no other answer
    v5 = broker.connected("pub5", protocol_level=MQTT_5)
    v5.send(PubRel(99))
    assert v5.received() == [PubComp(99, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND)]


# -- QoS 1 and 2 to a subscriber ---------------------------------------------------------------


def test_unacknowledged_qos1_is_resent_with_dup_after_reconnect(broker):
    sub = persistent_subscriber(broker, qos=1)
    publish(broker, Publish("t/1", b"a", 1, packet_id=1), Publish("t/2", b"b", 1, packet_id=2))
    first = sub.received()
    assert ids_and_flags(first) == [("Publish", 1, False, 1), ("Publish", 2, False, 1)]
    sub.send(PubAck(1))
    sub.lose()
    sub = broker.connected("sub", clean=False)
    assert sub.connack.session_present
    assert sub.pending == [Publish("t/2", b"b", 1, dup=True, packet_id=2)]  # [MQTT-4.4.0-1]
    sub.send(PubAck(2))
    sub.lose()
    assert broker.connected("sub", clean=False).pending == []


def test_qos2_to_subscriber_resends_publish_before_pubrec_and_pubrel_after(broker):
    sub = persistent_subscriber(broker, qos=2)
    publish(broker, Publish("t/1", b"a", 2, packet_id=1), PubRel(1),
            Publish("t/2", b"b", 2, packet_id=2), PubRel(2))
    assert ids_and_flags(sub.received()) == [("Publish", 1, False, 2), ("Publish", 2, False, 2)]
    sub.send(PubRec(1))
    assert sub.received() == [PubRel(1)]  # [MQTT-4.3.3-1]
    sub.lose()
    sub = broker.connected("sub", clean=False)
    # In order: the PUBREL owed for 1, the PUBLISH of 2 again with DUP [MQTT-4.4.0-1]
    assert sub.pending == [PubRel(1), Publish("t/2", b"b", 2, dup=True, packet_id=2)]
    sub.send(PubComp(1), PubRec(2))
    assert sub.received() == [PubRel(2)]
    sub.send(PubComp(2))
    assert sub.session.inflight == {}
    sub.lose()
    assert broker.connected("sub", clean=False).pending == []


def test_puback_for_a_qos2_message_closes_the_connection(broker):
    sub = persistent_subscriber(broker, qos=2)
    publish(broker, Publish("t/1", b"a", 2, packet_id=1))
    [delivery] = sub.received()
    sub.send(PubAck(delivery.packet_id))
    assert "[MQTT-4.3.3-1]" in sub.closed.text


def test_late_duplicate_acks_are_ignored(broker):
    sub = persistent_subscriber(broker, qos=1)
    publish(broker, Publish("t/1", b"a", 1, packet_id=1))
    sub.received()
    sub.send(PubAck(1), PubAck(1), PubComp(1), PubRec(5))
    assert sub.closed is None
    assert sub.received() == [PubRel(5)]  # PUBREC is always answered [MQTT-4.3.3-1]


def test_clean_session_gets_nothing_owed_after_reconnect(broker):
    sub = broker.connected("sub")
    subscribe(sub, "t/#", 1)
    publish(broker, Publish("t/1", b"a", 1, packet_id=1))
    assert len(sub.received()) == 1
    sub.lose()
    again = broker.connected("sub")
    assert not again.connack.session_present and again.pending == []


def test_offline_persistent_session_gets_queued_messages_on_reconnect(broker):
    sub = persistent_subscriber(broker, qos=2)
    sub.lose()
    publish(broker, Publish("t/0", b"zero"), Publish("t/1", b"one", 1, packet_id=1),
            Publish("t/2", b"two", 2, packet_id=2), PubRel(2))
    sub = broker.connected("sub", clean=False)
    # QoS 0 is not queued for an offline client; QoS 1/2 go out fresh (DUP 0), in order.
    assert ids_and_flags(sub.pending) == [("Publish", 1, False, 1), ("Publish", 2, False, 2)]


# -- the in-flight window and the queue --------------------------------------------------------


def test_a_message_queued_offline_is_its_own_queue_entry_and_keeps_no_wire_bytes():
    broker = make_broker()
    live = persistent_subscriber(broker, "live", qos=1)
    persistent_subscriber(broker, "away", qos=1).lose()
    publish(broker, Publish("t/1", b"a", 1, packet_id=1))
    queue = broker.ctx.registry.sessions["away"].queue
    [message] = queue  # not a (message, qos, retain, ids) tuple: the message itself
    assert message.payload == b"a" and message._forms is None and message._acked_head is None
    # the live subscriber of the same fan-out still gets its bytes, laid out again
    assert [(p.topic, p.payload, p.qos) for p in live.received()] == [("t/1", b"a", 1)]
    back = broker.connected("away", clean=False)
    assert [(p.topic, p.payload, p.qos, p.dup) for p in back.pending] == \
        [("t/1", b"a", 1, False)]


def test_inflight_window_holds_the_rest_until_acknowledged():
    broker = make_broker("max_inflight_messages = 2\n")
    sub = persistent_subscriber(broker, qos=1)
    publish(broker, *(Publish(f"t/{i}", b"m", 1, packet_id=i + 1) for i in range(5)))
    assert [p.topic for p in sub.received()] == ["t/0", "t/1"]
    assert len(sub.session.queue) == 3
    sub.send(PubAck(1))
    assert [(p.topic, p.packet_id) for p in sub.received()] == [("t/2", 3)]
    sub.send(PubAck(2), PubAck(3))
    assert [p.topic for p in sub.received()] == ["t/3", "t/4"]
    assert broker.stats.publish_dropped == 0


def test_window_refills_after_reconnect_behind_the_resends():
    broker = make_broker("max_inflight_messages = 1\n")
    sub = persistent_subscriber(broker, qos=1)
    publish(broker, Publish("t/a", b"1", 1, packet_id=1), Publish("t/b", b"2", 1, packet_id=2))
    assert [p.topic for p in sub.received()] == ["t/a"]
    sub.lose()
    sub = broker.connected("sub", clean=False)
    assert ids_and_flags(sub.pending) == [("Publish", 1, True, 1)]
    sub.send(PubAck(1))
    assert ids_and_flags(sub.received()) == [("Publish", 2, False, 1)]


def test_max_queued_messages_drops_new_messages_and_counts_them():
    broker = make_broker("max_inflight_messages = 1\nmax_queued_messages = 2\n")
    sub = persistent_subscriber(broker, qos=1)
    publish(broker, *(Publish("t/x", bytes([i]), 1, packet_id=i + 1) for i in range(5)))
    assert broker.stats.publish_dropped == 2  # one in flight, two queued, two dropped
    payloads = [p.payload for p in sub.received()]
    for packet_id in (1, 2, 3):
        sub.send(PubAck(packet_id))
        payloads += [p.payload for p in sub.received()]
    assert payloads == [b"\x00", b"\x01", b"\x02"]  # the newest were dropped, not the oldest


def test_max_queued_bytes_drops_what_would_not_fit():
    broker = make_broker("max_inflight_messages = 1\nmax_queued_bytes = 10\n")
    sub = persistent_subscriber(broker, qos=1)
    sub.lose()  # offline: everything goes to the queue
    publish(broker, Publish("t/x", b"123456", 1, packet_id=1),
            Publish("t/x", b"12345", 1, packet_id=2),  # 11 bytes: dropped
            Publish("t/x", b"1234", 1, packet_id=3))  # 10 bytes: fits
    assert broker.stats.publish_dropped == 1
    sub = broker.connected("sub", clean=False)
    received = list(sub.pending)
    sub.send(PubAck(1))
    received += sub.received()
    assert [p.payload for p in received] == [b"123456", b"1234"]


def test_qos0_to_an_offline_session_is_not_queued_and_not_a_drop():
    broker = make_broker()
    sub = persistent_subscriber(broker, qos=0)
    sub.lose()
    publish(broker, Publish("t/x", b"gone"))
    assert broker.ctx.registry.get("sub").owed() == 0
    assert broker.stats.publish_dropped == 0


def test_qos_is_the_lower_of_publish_and_subscription(broker):
    sub = broker.connected("sub")
    subscribe(sub, "t/#", 1)
    publish(broker, Publish("t/2", b"a", 2, packet_id=1), PubRel(1), Publish("t/0", b"b"))
    assert ids_and_flags(sub.received()) == [("Publish", 1, False, 1), ("Publish", 0, False, 0)]

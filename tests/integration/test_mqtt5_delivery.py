"""What an MQTT 5 subscriber receives, over real sockets with raw v5 bytes: message expiry
(queued, the time left, across a restart), outbound topic aliases, the client's maximum
packet size and receive maximum, the payload format check, and mixed 3.1.1/5 fleets."""

from __future__ import annotations

import time

import pytest
from support.clients import RawClient, unique

from broker.codec import (
    ConnAck,
    Connect,
    Disconnect,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    SubOptions,
    Subscribe,
    encode,
)
from broker.errors import ReasonCode

V5 = 5
EXPIRY = "message_expiry_interval"
SHORT = 0.5  # seconds to wait for a message that must not come


def v5_client(port: int, client_id: str | None = None, clean: bool = True,
              **properties: object) -> RawClient:
    raw = RawClient(port, protocol_level=V5)
    raw.send_packet(Connect(client_id or unique("v5"), V5, clean, 60, properties=properties), V5)
    connack = raw.recv_packet()
    assert isinstance(connack, ConnAck) and connack.reason_code == ReasonCode.SUCCESS
    return raw


def subscribe(raw: RawClient, topic_filter: str, qos: int = 1, level: int = V5) -> None:
    raw.send_packet(Subscribe(1, ((topic_filter, SubOptions(qos)),)), level)
    assert isinstance(raw.recv_packet(), SubAck)


def publish(raw: RawClient, packet: Publish) -> object:
    """Send a v5 PUBLISH; return its acknowledgement (None at QoS 0)."""
    raw.send_packet(packet, V5)
    return raw.recv_packet() if packet.qos else None


def persistent_subscriber_offline(port: int, topic_filter: str) -> str:
    client_id = unique("v5-away")
    raw = v5_client(port, client_id, session_expiry_interval=300)
    subscribe(raw, topic_filter)
    raw.send_packet(Disconnect(), V5)
    assert raw.closed_by_broker()
    return client_id


def nothing_more(raw: RawClient) -> bool:
    try:
        raw.recv_packet(SHORT)
    except TimeoutError:
        return True
    return False


def sleep_until(deadline: float) -> None:
    """Let a known interval pass (a message's expiry, a broker's downtime)."""
    time.sleep(max(0.0, deadline - time.monotonic()))


# -- message expiry ------------------------------------------------------------------------------

def test_a_queued_message_past_its_expiry_is_not_delivered_and_the_other_says_its_time_left(
        broker):
    topic = f"v5/expiry/{unique()}"
    client_id = persistent_subscriber_offline(broker.port, topic)
    pub = v5_client(broker.port)
    published = time.monotonic()
    assert publish(pub, Publish(topic, b"mortal", 1, packet_id=1, properties={EXPIRY: 1})) == \
        PubAck(1)
    assert publish(pub, Publish(topic, b"lasting", 1, packet_id=2, properties={EXPIRY: 60})) == \
        PubAck(2)
    sleep_until(published + 1.2)
    back = v5_client(broker.port, client_id, clean=False, session_expiry_interval=300)
    message = back.recv_packet()
    assert isinstance(message, Publish) and message.payload == b"lasting"
    waited = time.monotonic() - published
    assert 60 - waited - 1 <= message.properties[EXPIRY] <= 59  # [MQTT-3.3.2-6]
    back.send_packet(PubAck(message.packet_id), V5)
    assert nothing_more(back)
    back.close()
    pub.close()


def test_expiry_counts_from_arrival_across_a_restart(broker_factory):
    proc = broker_factory()
    topic = f"v5/restart/{unique()}"
    client_id = persistent_subscriber_offline(proc.port, topic)
    pub = v5_client(proc.port)
    published = time.monotonic()
    publish(pub, Publish(topic, b"short", 1, packet_id=1, properties={EXPIRY: 2}))
    assert publish(pub, Publish(topic, b"long", 1, packet_id=2, properties={EXPIRY: 100})) == \
        PubAck(2)
    pub.close()
    proc.kill9()
    sleep_until(published + 3)  # three seconds of downtime: "short" expires meanwhile
    proc.start()
    back = v5_client(proc.port, client_id, clean=False, session_expiry_interval=300)
    message = back.recv_packet()
    assert message.payload == b"long"
    assert message.properties[EXPIRY] <= 97  # not 100: the clock did not restart with it
    back.send_packet(PubAck(message.packet_id), V5)
    assert nothing_more(back)
    back.close()


def test_a_retained_message_says_its_time_left(broker):
    topic = f"v5/retained-expiry/{unique()}"
    pub = v5_client(broker.port)
    published = time.monotonic()
    publish(pub, Publish(topic, b"r", 1, retain=True, packet_id=1, properties={EXPIRY: 30}))
    sleep_until(published + 1.1)
    sub = v5_client(broker.port)
    subscribe(sub, topic)
    message = sub.recv_packet()
    assert message.retain and message.properties[EXPIRY] in (28, 29)
    publish(pub, Publish(topic, b"", 1, retain=True, packet_id=2))  # clear it
    for raw in (pub, sub):
        raw.close()


# -- topic aliases -------------------------------------------------------------------------------

def test_the_same_topic_twice_comes_with_an_alias_the_second_time_with_an_empty_topic(broker):
    topic = f"v5/alias/{unique()}"
    sub = v5_client(broker.port, topic_alias_maximum=5)
    subscribe(sub, topic, 0)
    pub = v5_client(broker.port)
    for payload in (b"1", b"2"):
        publish(pub, Publish(topic, payload))
    first, second = sub.recv_packet(), sub.recv_packet()
    assert (first.topic, first.properties["topic_alias"], first.payload) == (topic, 1, b"1")
    assert (second.topic, second.properties["topic_alias"], second.payload) == ("", 1, b"2")
    for raw in (pub, sub):
        raw.close()


def test_no_alias_for_a_client_that_offers_none(broker):
    topic = f"v5/no-alias/{unique()}"
    sub = v5_client(broker.port)
    subscribe(sub, topic, 0)
    pub = v5_client(broker.port)
    for payload in (b"1", b"2"):
        publish(pub, Publish(topic, payload))
    assert [(p.topic, dict(p.properties)) for p in (sub.recv_packet(), sub.recv_packet())] == \
        [(topic, {}), (topic, {})]
    for raw in (pub, sub):
        raw.close()


# -- maximum packet size and receive maximum -----------------------------------------------------

def test_a_message_above_the_clients_maximum_packet_size_is_dropped_and_logged(broker):
    topic = f"v5/big/{unique()}"
    sub = v5_client(broker.port, maximum_packet_size=100, receive_maximum=1)
    subscribe(sub, topic)
    pub = v5_client(broker.port)
    broker.mark_log()
    # Its one subscriber dropped it: a limit, so the publisher hears 0x97.
    assert publish(pub, Publish(topic, b"x" * 200, 1, packet_id=1)) == PubAck(
        1, ReasonCode.QUOTA_EXCEEDED)
    assert publish(pub, Publish(topic, b"small", 1, packet_id=2)) == PubAck(2)
    message = sub.recv_packet()  # the window was not held by the dropped one
    assert message.payload == b"small"
    broker.wait_for_log(r"dropped 1 message\(s\).*maximum packet size \(100 bytes\)")
    for raw in (pub, sub):
        raw.close()


def test_receive_maximum_1_holds_the_second_qos1_until_the_first_is_acknowledged(broker):
    topic = f"v5/flow/{unique()}"
    sub = v5_client(broker.port, receive_maximum=1)
    subscribe(sub, topic)
    pub = v5_client(broker.port)
    publish(pub, Publish(topic, b"first", 1, packet_id=1))
    publish(pub, Publish(topic, b"second", 1, packet_id=2))
    first = sub.recv_packet()
    assert first.payload == b"first"
    assert nothing_more(sub)  # [MQTT-3.3.4-9]
    sub.send_packet(PubAck(first.packet_id), V5)
    second = sub.recv_packet()
    assert second.payload == b"second"
    for raw in (pub, sub):
        raw.close()


# -- payload format ------------------------------------------------------------------------------

@pytest.mark.parametrize("qos, ack", [(1, PubAck), (2, PubRec)])
def test_a_payload_that_is_not_the_utf8_it_claims_gets_0x99_and_is_not_forwarded(broker, qos,
                                                                                   ack):
    topic = f"v5/format/{unique()}"
    sub = v5_client(broker.port)
    subscribe(sub, topic, 2)
    pub = v5_client(broker.port)
    flagged = {"payload_format_indicator": 1}
    reply = publish(pub, Publish(topic, b"\xff\xfe", qos, packet_id=3, properties=flagged))
    assert isinstance(reply, ack) and reply.reason_code == ReasonCode.PAYLOAD_FORMAT_INVALID
    publish(pub, Publish(topic, "ok ✓".encode(), 0, properties=flagged))
    message = sub.recv_packet()  # the first to arrive is the valid one
    assert message.payload == "ok ✓".encode()
    assert message.properties["payload_format_indicator"] == 1
    for raw in (pub, sub):
        raw.close()


# -- mixed fleets --------------------------------------------------------------------------------

def test_a_v311_subscriber_gets_a_v5_publish_without_its_properties(broker):
    topic = f"v5/mixed/{unique()}"
    old = RawClient(broker.port)
    old.connect()
    subscribe(old, topic, 1, level=4)
    pub = v5_client(broker.port)
    props = {"user_property": [("a", "1")], "content_type": "text/plain", EXPIRY: 60,
             "correlation_data": b"c", "response_topic": "r/t", "payload_format_indicator": 1}
    publish(pub, Publish(topic, b"hello", 1, packet_id=1, properties=props))
    message = old.recv_packet()
    assert encode(message, 4) == encode(Publish(topic, b"hello", 1,
                                                packet_id=message.packet_id), 4)
    for raw in (pub, old):
        raw.close()


def test_a_v5_subscriber_gets_a_v311_publish_with_no_properties(broker):
    topic = f"v5/mixed/{unique()}"
    sub = v5_client(broker.port)
    subscribe(sub, topic, 1)
    old = RawClient(broker.port)
    old.connect()
    old.send_packet(Publish(topic, b"from 3.1.1", 1, packet_id=1))
    assert isinstance(old.recv_packet(), PubAck)
    message = sub.recv_packet()
    assert message.payload == b"from 3.1.1" and dict(message.properties) == {}
    for raw in (sub, old):
        raw.close()


def test_v5_puback_says_quota_exceeded_when_every_subscriber_dropped_the_message(broker_factory):
    broker = broker_factory("[limits]\nmax_queued_messages = 1\n")
    topic = f"v5/quota/{unique()}"
    persistent_subscriber_offline(broker.port, topic)
    pub = v5_client(broker.port)
    first = publish(pub, Publish(topic, b"queued", 1, packet_id=1))
    assert isinstance(first, PubAck) and first.reason_code == ReasonCode.SUCCESS
    second = publish(pub, Publish(topic, b"over", 1, packet_id=2))
    assert isinstance(second, PubAck) and second.reason_code == ReasonCode.QUOTA_EXCEEDED
    # QoS 2: a failure PUBREC ends the exchange, so the id is free again (PUBREL: 0x92).
    third = publish(pub, Publish(topic, b"over", 2, packet_id=3))
    assert isinstance(third, PubRec) and third.reason_code == ReasonCode.QUOTA_EXCEEDED
    pub.send_packet(PubRel(3), V5)
    comp = pub.recv_packet()
    assert isinstance(comp, PubComp)
    assert comp.reason_code == ReasonCode.PACKET_IDENTIFIER_NOT_FOUND
    # Kept as the retained message, it was accepted: no failure code.
    kept = publish(pub, Publish(topic, b"kept", 1, retain=True, packet_id=4))
    assert isinstance(kept, PubAck) and kept.reason_code == ReasonCode.NO_MATCHING_SUBSCRIBERS
    pub.close()

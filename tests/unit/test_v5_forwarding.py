"""An MQTT 5 PUBLISH with property length 0 is forwarded as received to the MQTT 5
subscribers whose delivery needs nothing of its own, as a 3.1.1 one is to 3.1.1 subscribers
(issue 12: the v5 path at most 10 % dearer). The shortcut must never change the bytes: each
delivery is what a fresh `encode` of it gives, and a delivery that needs per-delivery
properties (a subscription identifier, an outbound topic alias) or a size check against the
client's maximum packet size still gets them. Clients are real `Connection`s in process; what
a subscriber got is the bytes its transport was given."""

from __future__ import annotations

from typing import Any

import pytest
from support.inprocess import Client, InProcessBroker

from broker.codec import Publish, SubAck, SubOptions, Subscribe, encode

V5 = 5


@pytest.fixture
def broker() -> InProcessBroker:
    return InProcessBroker()


def subscriber(broker: InProcessBroker, client_id: str, qos: int, level: int = V5,
               sub_properties: dict[str, Any] | None = None, **connect_properties: Any) -> Client:
    client = broker.connected(client_id, protocol_level=level,
                              properties=connect_properties if level >= V5 else {})
    client.send(Subscribe(1, (("t/#", SubOptions(qos)),), sub_properties or {}))
    [suback] = client.received()
    assert isinstance(suback, SubAck) and suback.reason_codes == (qos,)
    return client


def new_bytes(client: Client) -> bytes:
    """The bytes the broker wrote to `client` since the last call (outboxes flushed)."""
    client.broker.flush()
    data = bytes(client.transport.data[client._read:])
    client._read = len(client.transport.data)
    return data


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_a_plain_v5_subscriber_gets_the_publish_as_sent_but_for_its_packet_id(broker, qos):
    sub = subscriber(broker, "sub", qos)
    pub = broker.connected("pub", protocol_level=V5)
    sent = Publish("t/a", b"payload", qos, packet_id=7 if qos else 0)
    pub.send(sent)
    got = new_bytes(sub)
    sub_packet_id = int.from_bytes(got[7:9]) if qos else 0  # after "t/a": the broker's id
    assert got == encode(Publish("t/a", b"payload", qos, packet_id=sub_packet_id), V5)
    if not qos:
        assert got == encode(sent, V5)  # the very bytes


def test_the_forwarded_bytes_are_the_received_ones_not_a_copy(broker):
    # What makes it cheap: no layout at all, the decoder's slice goes out as it is.
    pub = broker.connected("pub", protocol_level=V5)
    pub.connection.decoder.feed(encode(Publish("t/a", b"x", retain=True), V5))
    packet = pub.connection.decoder.next_packet()
    assert packet.forwardable == encode(Publish("t/a", b"x", retain=True), V5)
    pub.protocol.handle(packet)
    retained = broker.ctx.retained.get("t/a")
    assert retained is not None and retained.qos0(True, V5) is packet.forwardable


def test_a_retained_v5_publish_goes_to_a_later_subscriber_as_sent(broker):
    pub = broker.connected("pub", protocol_level=V5)
    pub.send(Publish("t/a", b"kept", 1, retain=True, packet_id=3))
    pub.received()
    sub = broker.connected("sub", protocol_level=V5)
    sub.send(Subscribe(1, (("t/#", SubOptions(0)),)))
    assert new_bytes(sub) == (encode(SubAck(1, (0,)), V5)
                              + encode(Publish("t/a", b"kept", 0, retain=True), V5))


@pytest.mark.parametrize("qos", [0, 1])
def test_a_subscription_identifier_is_carried_not_skipped(broker, qos):
    sub = subscriber(broker, "sub", qos, sub_properties={"subscription_identifier": [42]})
    broker.connected("pub", protocol_level=V5).send(Publish("t/a", b"p", qos, packet_id=1))
    [publish] = sub.received()
    assert publish.properties == {"subscription_identifier": [42]}  # [MQTT-3.3.4-4]


@pytest.mark.parametrize("qos", [0, 1])
def test_an_outbound_topic_alias_is_assigned_not_skipped(broker, qos):
    sub = subscriber(broker, "sub", qos, topic_alias_maximum=3)
    pub = broker.connected("pub", protocol_level=V5)
    pub.send(Publish("t/a", b"1", qos, packet_id=1))
    pub.send(Publish("t/a", b"2", qos, packet_id=2))
    assert [(p.topic, p.properties) for p in sub.received()] == \
        [("t/a", {"topic_alias": 1}), ("", {"topic_alias": 1})]


@pytest.mark.parametrize("qos", [0, 1])
def test_the_clients_maximum_packet_size_still_holds(broker, qos):
    size = len(encode(Publish("t/a", b"x" * 10, qos, packet_id=1 if qos else 0), V5))
    sub = subscriber(broker, "sub", qos, maximum_packet_size=size)
    pub = broker.connected("pub", protocol_level=V5)
    pub.send(Publish("t/a", b"x" * 11, qos, packet_id=1))  # one byte above: dropped
    pub.send(Publish("t/a", b"x" * 10, qos, packet_id=2))  # exactly the maximum: sent
    assert [p.payload for p in sub.received()] == [b"x" * 10]
    assert broker.stats.publish_dropped == 1


@pytest.mark.parametrize("qos", [0, 1])
def test_a_v3_subscriber_of_a_forwarded_v5_publish_gets_v3_bytes(broker, qos):
    sub = subscriber(broker, "old", qos, level=4)
    broker.connected("pub", protocol_level=V5).send(Publish("t/a", b"p", qos, packet_id=5))
    got = new_bytes(sub)
    assert got == encode(Publish("t/a", b"p", qos, packet_id=1 if qos else 0), 4)

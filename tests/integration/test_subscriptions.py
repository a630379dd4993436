"""SUBSCRIBE / UNSUBSCRIBE: granted QoS, wildcards, `$` topics, overlapping subscriptions."""

from __future__ import annotations

import pytest
from support.clients import PahoClient, RawClient, expect_marker, unique

from broker.codec import SubOptions, Subscribe, UnsubAck, Unsubscribe


@pytest.fixture
def pair(broker):
    sub = PahoClient(broker.port)
    sub.connect()
    pub = PahoClient(broker.port)
    pub.connect()
    yield sub, pub
    sub.disconnect()
    pub.disconnect()


def test_suback_grants_the_requested_qos_for_each_filter_byte_exact(broker):
    raw = RawClient(broker.port)
    raw.connect()
    # SUBSCRIBE id 10: "a/b" QoS 0, "c/+" QoS 1, "d/#" QoS 2
    raw.send(bytes.fromhex("8214" "000a" "0003612f6200" "0003632f2b01" "0003642f2302"))
    assert raw.recv_bytes(7) == bytes.fromhex("9005000a000102")


@pytest.mark.parametrize(("topic_filter", "topic", "delivered"), [
    ("w/+/c", "w/b/c", True),
    ("w/+/c", "w/b/d", False),
    ("w/+/c", "w/b/c/d", False),
    ("w/#", "w/b/c/d", True),
    ("w/#", "w", True),  # [MQTT-4.7.1-2] "sport/#" also matches "sport"
    ("w/+", "w/", True),  # an empty level is a level
    ("w/+", "w", False),
])
def test_wildcards_match_as_the_spec_says(broker, pair, topic_filter, topic, delivered):
    sub, pub = pair
    prefix = unique("wild")
    sub.subscribe(f"{prefix}/{topic_filter}", 0)
    pub.publish(f"{prefix}/{topic}", b"x", qos=1)
    pub.publish(f"{prefix}/end", b"end", qos=1)
    sub.subscribe(f"{prefix}/end", 0)
    pub.publish(f"{prefix}/end", b"end", qos=1)
    got = []
    while True:
        message = sub.expect(1)[0]
        if message.payload == b"end":
            break
        got.append(message.topic)
    assert got == ([f"{prefix}/{topic}"] if delivered else [])


def test_leading_wildcards_do_not_match_dollar_topics(broker, pair):
    sub, pub = pair
    topic = f"${unique('dollar')}/x"
    sub.subscribe("#", 0)
    sub.subscribe("+/x", 0)
    sub.subscribe(topic, 0)
    pub.publish(topic, b"only the exact filter", qos=1)
    [message] = sub.expect(1)  # [MQTT-4.7.2-1]: '#' and '+/x' do not match it
    assert message.topic == topic
    sub.client.unsubscribe("#")
    sub.client.unsubscribe("+/x")


def test_overlapping_subscriptions_deliver_one_copy_at_the_highest_qos(broker, pair):
    sub, pub = pair
    prefix = unique("overlap")
    assert sub.subscribe(f"{prefix}/#", 0) == [0]
    assert sub.subscribe(f"{prefix}/+/c", 2) == [2]
    assert sub.subscribe(f"{prefix}/b/c", 1) == [1]
    pub.publish(f"{prefix}/b/c", b"one copy", qos=2)
    [message] = sub.expect(1)
    assert (message.payload, message.qos) == (b"one copy", 2)
    expect_marker(sub, pub, f"{prefix}/m")  # a second copy would have come before


def test_resubscribing_replaces_the_granted_qos(broker, pair):
    sub, pub = pair
    topic = f"{unique('resub')}/t"
    sub.subscribe(topic, 2)
    sub.subscribe(topic, 0)
    pub.publish(topic, b"x", qos=2)
    [message] = sub.expect(1)
    assert message.qos == 0
    expect_marker(sub, pub, topic)  # one subscription, so one copy


def test_unsubscribe_stops_delivery_and_gets_unsuback(broker):
    topic = f"{unique('unsub')}/t"
    raw = RawClient(broker.port)
    raw.connect()
    raw.send_packet(Subscribe(3, ((topic, SubOptions(1)),)))
    assert raw.recv_packet().reason_codes == (1,)
    raw.send_packet(Unsubscribe(4, (topic, "never/subscribed")))
    assert raw.recv_packet() == UnsubAck(4)
    pub = PahoClient(broker.port)
    pub.connect()
    pub.publish(topic, b"nobody listens", qos=1)
    raw.send_packet(Subscribe(5, ((f"{topic}/end", SubOptions(0)),)))
    assert raw.recv_packet().reason_codes == (0,)
    pub.publish(f"{topic}/end", b"end", qos=1)
    assert raw.recv_packet().payload == b"end"
    pub.disconnect()


def test_shared_subscription_delivers_each_message_to_one_member(broker):
    prefix = unique("share")
    members = [PahoClient(broker.port) for _ in range(2)]
    for member in members:
        member.connect()
        member.subscribe(f"$share/group/{prefix}/#", 1)
    pub = PahoClient(broker.port)
    pub.connect()
    for i in range(10):
        pub.publish(f"{prefix}/t", b"%d" % i, qos=1)
    for _ in members:  # round-robin: one end marker each, after all ten
        pub.publish(f"{prefix}/t", b"end", qos=1)
    counts = []
    total = []
    for member in members:
        got = []
        while (payload := member.expect(1)[0].payload) != b"end":
            got.append(payload)
        counts.append(len(got))
        total.extend(got)
    assert sorted(total) == sorted(b"%d" % i for i in range(10))
    assert counts == [5, 5]  # round-robin
    for client in [*members, pub]:
        client.disconnect()

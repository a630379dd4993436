"""Retained messages ([MQTT-3.3.1-5] to [MQTT-3.3.1-11]) and wills ([MQTT-3.1.2-8] to
[MQTT-3.1.2-17])."""

from __future__ import annotations

import pytest
from support.clients import PahoClient, RawClient, expect_marker, unique

from broker.codec import Disconnect, Will


def test_retained_message_is_sent_on_subscribe_with_retain_1(broker):
    topic = f"{unique('ret')}/t"
    pub = PahoClient(broker.port)
    pub.connect()
    pub.publish(topic, b"kept", qos=1, retain=True)
    sub = PahoClient(broker.port)
    sub.connect()
    sub.subscribe(topic.rsplit("/", 1)[0] + "/#", 1)
    [message] = sub.expect(1)
    assert (message.topic, message.payload, message.retain, message.qos) == \
        (topic, b"kept", True, 1)
    # A live publish to an existing subscriber carries retain=0 [MQTT-3.3.1-9].
    pub.publish(topic, b"live", qos=1, retain=True)
    [live] = sub.expect(1)
    assert (live.payload, live.retain) == (b"live", False)
    # A new subscription gets the latest retained value.
    sub.subscribe(topic, 0)
    [again] = sub.expect(1)
    assert (again.payload, again.retain, again.qos) == (b"live", True, 0)
    pub.disconnect()
    sub.disconnect()


def test_empty_retained_publish_clears_the_topic(broker):
    topic = f"{unique('clear')}/t"
    pub = PahoClient(broker.port)
    pub.connect()
    pub.publish(topic, b"soon gone", qos=1, retain=True)
    pub.publish(topic, b"", qos=1, retain=True)  # [MQTT-3.3.1-10]
    pub.publish(f"{topic}/marker", b"m", qos=1, retain=True)
    sub = PahoClient(broker.port)
    sub.connect()
    sub.subscribe(f"{topic}/#", 1)
    [message] = sub.expect(1)
    assert message.topic == f"{topic}/marker"
    expect_marker(sub, pub, f"{topic}/live")  # retained ones all come before a live one
    pub.disconnect()
    sub.disconnect()


def test_retained_qos0_message_is_replaced_not_accumulated(broker):
    topic = f"{unique('replace')}/t"
    pub = PahoClient(broker.port)
    pub.connect()
    for i in range(5):
        pub.publish(topic, b"v%d" % i, qos=1, retain=True)
    sub = PahoClient(broker.port)
    sub.connect()
    sub.subscribe(topic, 0)
    assert [m.payload for m in sub.expect(1)] == [b"v4"]
    expect_marker(sub, pub, topic)  # retained ones all come before a live one
    pub.disconnect()
    sub.disconnect()


def _watch(broker, topic, qos=1):
    watcher = PahoClient(broker.port)
    watcher.connect()
    watcher.subscribe(topic, qos)
    return watcher


@pytest.mark.parametrize("will_qos", [0, 1, 2])
def test_will_is_published_when_the_socket_dies(broker, will_qos):
    topic = f"{unique('will')}/status"
    watcher = _watch(broker, topic, 2)
    raw = RawClient(broker.port)
    raw.connect(unique(), will=Will(topic, b"gone", will_qos, False))
    raw.close()
    [message] = watcher.expect(1)
    assert (message.topic, message.payload, message.qos) == (topic, b"gone", will_qos)
    watcher.disconnect()


def test_will_is_not_published_after_disconnect(broker):
    topic = f"{unique('nowill')}/status"
    watcher = _watch(broker, topic)
    raw = RawClient(broker.port)
    client_id = unique()
    raw.connect(client_id, will=Will(topic, b"should not appear", 1, False))
    raw.send_packet(Disconnect())
    assert raw.closed_by_broker()
    broker.wait_for_log(rf"client disconnected: {client_id} ")  # after the will, if any
    expect_marker(watcher, watcher, topic)  # [MQTT-3.14.4-3]
    watcher.disconnect()


def test_will_with_retain_is_retained(broker):
    topic = f"{unique('willret')}/status"
    raw = RawClient(broker.port)
    raw.connect(unique(), will=Will(topic, b"offline", 1, True))
    raw.close()
    broker.wait_for_log(r"socket closed by peer")
    late = PahoClient(broker.port)
    late.connect()
    late.subscribe(topic, 1)
    [message] = late.expect(1)
    assert (message.payload, message.retain) == (b"offline", True)
    late.disconnect()


def test_will_is_published_on_protocol_violation(broker):
    topic = f"{unique('willbad')}/status"
    watcher = _watch(broker, topic)
    raw = RawClient(broker.port)
    raw.connect(unique(), will=Will(topic, b"violated", 0, False))
    raw.send(bytes.fromhex("3605000161ffff"))  # PUBLISH with QoS 3
    assert raw.closed_by_broker()
    assert watcher.expect(1)[0].payload == b"violated"
    watcher.disconnect()


def test_will_is_published_on_takeover(broker):
    topic = f"{unique('willtake')}/status"
    client_id = unique("taken")
    watcher = _watch(broker, topic)
    first = RawClient(broker.port)
    first.connect(client_id, will=Will(topic, b"taken over", 1, False))
    second = RawClient(broker.port)
    second.connect(client_id)
    assert first.closed_by_broker()
    assert watcher.expect(1)[0].payload == b"taken over"
    watcher.disconnect()


def test_will_is_published_on_keepalive_timeout(broker):
    topic = f"{unique('willka')}/status"
    watcher = _watch(broker, topic)
    raw = RawClient(broker.port)
    raw.connect(unique(), keepalive=1, will=Will(topic, b"timed out", 1, False))
    [message] = watcher.expect(1, timeout=4)
    assert message.payload == b"timed out"
    assert raw.closed_by_broker(1)
    watcher.disconnect()


def test_will_is_published_when_a_subscriber_resets_its_socket_under_load(broker):
    import socket
    import struct

    topic = f"{unique('reset')}/status"
    watcher = _watch(broker, topic)
    raw = RawClient(broker.port)
    raw.connect(unique("resetter"), will=Will(topic, b"reset", 1, False))
    raw.subscribe(f"{topic}/flood", qos=0)
    pub = RawClient(broker.port)
    pub.connect()
    from broker.codec import Publish, encode
    flood = b"".join(encode(Publish(f"{topic}/flood", b"x" * 1024)) for _ in range(200))
    pub.send(flood)
    # An abortive close (RST): the broker's next read or write on it fails.
    raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.close()
    pub.send(flood)
    [message] = watcher.expect(1)
    assert message.payload == b"reset"
    broker.wait_for_log(r"client disconnected: resetter-\w+ .*reason=(socket error|socket closed)")
    watcher.disconnect()

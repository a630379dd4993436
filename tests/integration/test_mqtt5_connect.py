"""MQTT 5 CONNECT, CONNACK, DISCONNECT and session expiry over real sockets: raw v5 bytes from
the test's own codec, and paho-mqtt 2 speaking MQTTv5."""

from __future__ import annotations

import threading

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from support.clients import TIMEOUT, RawClient, unique

from broker.codec import (
    ConnAck,
    Connect,
    Disconnect,
    PubAck,
    Publish,
    SubAck,
    SubOptions,
    Subscribe,
    UnsubAck,
    Unsubscribe,
    Will,
)
from broker.errors import ReasonCode

V5 = 5


def v5_client(port: int) -> RawClient:
    return RawClient(port, protocol_level=V5)


def v5_connect(raw: RawClient, client_id: str | None = None, clean: bool = True,
               keepalive: int = 60, **properties: object) -> ConnAck:
    raw.send_packet(Connect(client_id if client_id is not None else unique("v5"), V5, clean,
                            keepalive, properties=properties), V5)
    connack = raw.recv_packet()
    assert isinstance(connack, ConnAck)
    return connack


def test_v5_connect_is_accepted_with_properties_the_client_needs(broker):
    raw = v5_client(broker.port)
    connack = v5_connect(raw)
    assert connack.reason_code == ReasonCode.SUCCESS
    assert not connack.session_present
    # Defaults that differ from the spec's: inflight window 20, ten topic aliases.
    assert connack.properties["receive_maximum"] == 20
    assert connack.properties["topic_alias_maximum"] == 10
    assert "assigned_client_identifier" not in connack.properties
    raw.close()


def test_v5_empty_client_id_gets_an_assigned_identifier_even_without_clean_start(broker):
    raw = v5_client(broker.port)
    connack = v5_connect(raw, client_id="", clean=False, session_expiry_interval=30)
    assert connack.reason_code == ReasonCode.SUCCESS
    assigned = connack.properties["assigned_client_identifier"]
    assert assigned.startswith("auto-")
    broker.wait_for_log(rf"client connected: {assigned} .* protocol=5")
    raw.close()


def test_v5_keepalive_above_max_keepalive_gets_server_keep_alive(broker_factory):
    broker = broker_factory("[limits]\nmax_keepalive = 30\n")
    raw = v5_client(broker.port)
    connack = v5_connect(raw, keepalive=600)
    assert connack.reason_code == ReasonCode.SUCCESS
    assert connack.properties["server_keep_alive"] == 30
    raw.close()


def test_v5_unknown_authentication_method_gets_connack_0x8c_then_close(broker):
    raw = v5_client(broker.port)
    connack = v5_connect(raw, authentication_method="SCRAM-SHA-1")
    assert connack.reason_code == ReasonCode.BAD_AUTHENTICATION_METHOD
    assert "reason_string" in connack.properties
    assert raw.closed_by_broker()


def test_v5_receive_maximum_zero_is_a_protocol_error(broker):
    raw = v5_client(broker.port)
    connack = v5_connect(raw, receive_maximum=0)
    assert connack.reason_code == ReasonCode.PROTOCOL_ERROR
    assert raw.closed_by_broker()


def test_v5_session_expiry_keeps_the_session_and_queues_qos1(broker):
    client_id = unique("v5-sess")
    sub = v5_client(broker.port)
    v5_connect(sub, client_id, clean=True, session_expiry_interval=300)
    sub.send_packet(Subscribe(1, (("v5/sess/+", SubOptions(1)),)), V5)
    assert isinstance(sub.recv_packet(), SubAck)
    sub.send_packet(Disconnect(), V5)
    assert sub.closed_by_broker()
    pub = v5_client(broker.port)
    v5_connect(pub)
    pub.send_packet(Publish("v5/sess/a", b"while-away", qos=1, packet_id=7), V5)
    ack = pub.recv_packet()
    assert isinstance(ack, PubAck) and ack.reason_code == ReasonCode.SUCCESS
    back = v5_client(broker.port)
    connack = v5_connect(back, client_id, clean=False, session_expiry_interval=300)
    assert connack.session_present
    message = back.recv_packet()
    assert isinstance(message, Publish) and message.payload == b"while-away"
    for raw in (pub, back):
        raw.close()


def test_v5_session_expiry_zero_ends_the_session_with_the_connection(broker):
    client_id = unique("v5-gone")
    raw = v5_client(broker.port)
    v5_connect(raw, client_id, clean=False)  # no session expiry interval: 0
    raw.send_packet(Subscribe(1, (("v5/gone", SubOptions(1)),)), V5)
    raw.recv_packet()
    raw.send_packet(Disconnect(), V5)
    assert raw.closed_by_broker()
    again = v5_client(broker.port)
    assert not v5_connect(again, client_id, clean=False).session_present
    again.close()


def test_v5_disconnect_cannot_raise_session_expiry_from_zero(broker):
    raw = v5_client(broker.port)
    v5_connect(raw)
    raw.send_packet(Disconnect(properties={"session_expiry_interval": 60}), V5)
    reply = raw.recv_packet()
    assert isinstance(reply, Disconnect) and reply.reason_code == ReasonCode.PROTOCOL_ERROR
    assert raw.closed_by_broker()


def test_v5_takeover_tells_the_old_connection_0x8e(broker):
    client_id = unique("v5-take")
    old = v5_client(broker.port)
    v5_connect(old, client_id)
    new = v5_client(broker.port)
    v5_connect(new, client_id)
    reply = old.recv_packet()
    assert isinstance(reply, Disconnect)
    assert reply.reason_code == ReasonCode.SESSION_TAKEN_OVER
    assert old.closed_by_broker()
    new.close()


def test_v5_puback_says_no_matching_subscribers_and_not_authorized(broker):
    raw = v5_client(broker.port)
    v5_connect(raw)
    raw.send_packet(Publish(f"v5/nobody/{unique()}", b"x", qos=1, packet_id=3), V5)
    ack = raw.recv_packet()
    assert isinstance(ack, PubAck) and ack.reason_code == ReasonCode.NO_MATCHING_SUBSCRIBERS
    raw.send_packet(Publish("$SYS/broker/forged", b"x", qos=1, packet_id=4), V5)
    ack = raw.recv_packet()
    assert isinstance(ack, PubAck) and ack.reason_code == ReasonCode.NOT_AUTHORIZED
    raw.close()


def test_v5_suback_and_unsuback_carry_reason_codes_per_filter(broker):
    raw = v5_client(broker.port)
    v5_connect(raw)
    raw.send_packet(Subscribe(5, (("v5/ok/#", SubOptions(1)), ("v5/bad/#/x", SubOptions(1)))), V5)
    suback = raw.recv_packet()
    assert isinstance(suback, SubAck)
    assert suback.reason_codes == (1, ReasonCode.TOPIC_FILTER_INVALID)
    raw.send_packet(Unsubscribe(6, ("v5/ok/#", "v5/never")), V5)
    unsuback = raw.recv_packet()
    assert isinstance(unsuback, UnsubAck)
    assert unsuback.reason_codes == (ReasonCode.SUCCESS, ReasonCode.NO_SUBSCRIPTION_EXISTED)
    raw.close()


def test_v5_disconnect_with_will_publishes_the_will(broker):
    watcher = v5_client(broker.port)
    v5_connect(watcher)
    topic = f"v5/will/{unique()}"
    watcher.send_packet(Subscribe(1, ((topic, SubOptions(0)),)), V5)
    watcher.recv_packet()
    raw = v5_client(broker.port)
    raw.send_packet(Connect(unique("v5-will"), V5, True, 60, Will(topic, b"bye"),
                            properties={}), V5)
    assert isinstance(raw.recv_packet(), ConnAck)
    raw.send_packet(Disconnect(ReasonCode.DISCONNECT_WITH_WILL), V5)
    will = watcher.recv_packet()
    assert isinstance(will, Publish) and will.payload == b"bye"
    watcher.close()


def test_paho_v5_round_trip_with_user_properties(broker):
    received: list[paho.MQTTMessage] = []
    got = threading.Event()
    connected = threading.Event()
    subscribed = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("paho5"),
                         protocol=paho.MQTTv5)
    client.on_connect = lambda c, u, f, rc, p: connected.set()
    client.on_subscribe = lambda c, u, mid, codes, p: subscribed.set()

    def on_message(c: object, u: object, message: paho.MQTTMessage) -> None:
        received.append(message)
        got.set()

    client.on_message = on_message
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        assert connected.wait(TIMEOUT)
        client.subscribe("v5/paho/+", qos=1)
        assert subscribed.wait(TIMEOUT)
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [("a", "1"), ("b", "2")]
        props.ContentType = "text/plain"
        client.publish("v5/paho/x", b"hello", qos=1, properties=props).wait_for_publish(TIMEOUT)
        assert got.wait(TIMEOUT)
        message = received[0]
        assert message.payload == b"hello"
        assert message.properties.UserProperty == [("a", "1"), ("b", "2")]
        assert message.properties.ContentType == "text/plain"
    finally:
        client.loop_stop()
        client.disconnect()


def test_v5_retain_when_not_available_gets_disconnect_0x9a(broker_factory):
    broker = broker_factory("[broker]\nretain_available = false\n")
    raw = v5_client(broker.port)
    connack = v5_connect(raw)
    assert connack.properties["retain_available"] == 0
    raw.send_packet(Publish("v5/retained", b"x", retain=True), V5)
    reply = raw.recv_packet()
    assert isinstance(reply, Disconnect)
    assert reply.reason_code == ReasonCode.RETAIN_NOT_SUPPORTED
    assert raw.closed_by_broker()


def test_v5_second_connect_of_an_unsupported_level_gets_disconnect_0x82(broker):
    """Found by the protocol fuzzer (tests/fuzz/corpus/protocol/regress_second_connect_level_1):
    the second CONNECT's unsupported level raised 0x84, a CONNACK code, and the broker sent
    it in a DISCONNECT, which no client can read [MQTT-3.14.2-1]. A second CONNECT is a
    protocol error [MQTT-3.1.0-2] whatever it says."""
    raw = v5_client(broker.port)
    client_id = unique("twice")
    assert v5_connect(raw, client_id).reason_code == ReasonCode.SUCCESS
    broker.mark_log()
    raw.send(bytes.fromhex("100c00044d515454010000000000"))  # CONNECT "MQTT" level 1
    assert raw.recv_packet() == Disconnect(ReasonCode.PROTOCOL_ERROR)
    assert raw.closed_by_broker()
    broker.wait_for_log(rf"closing {client_id} .*unsupported protocol 'MQTT' level 1")

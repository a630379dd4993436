"""Mixed MQTT 3.1.1 / 5 fleets, and the server's DISCONNECT with a reason, in raw bytes.

A message crosses levels with its payload intact: a 3.1.1 subscriber gets a v5 publisher's
message without properties (byte for byte what 3.1.1 says), a v5 subscriber gets them all;
a v3 publisher's message reaches a v5 subscriber with none. When the broker ends a v5
connection it says why first (5.0 section 4.13.2: DISCONNECT with a reason code, then close),
and only that connection ends. Takeover (0x8E), DISCONNECT raising session expiry from 0
(0x82) and retain not available (0x9A) are in test_mqtt5_connect.py.
"""

from __future__ import annotations

import signal
import socket
import struct

import pytest
from support.clients import TIMEOUT, RawClient, unique

from broker.codec import (
    ConnAck,
    Connect,
    Disconnect,
    PingReq,
    PingResp,
    PubAck,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    SubOptions,
    Subscribe,
    encode,
)
from broker.errors import ReasonCode

V5, V311 = 5, 4


def connected(port: int, level: int, client_id: str | None = None, keepalive: int = 60,
              **props: object) -> RawClient:
    raw = RawClient(port, protocol_level=level)
    raw.send_packet(Connect(client_id or unique(f"v{level}"), level, True, keepalive,
                            properties=props if level == V5 else {}), level)
    connack = raw.recv_packet()
    assert isinstance(connack, ConnAck) and connack.reason_code == 0, connack
    return raw


def subscribed(port: int, level: int, topic_filter: str, qos: int = 0) -> RawClient:
    raw = connected(port, level)
    raw.send_packet(Subscribe(1, ((topic_filter, SubOptions(qos)),)), level)
    assert isinstance(raw.recv_packet(), SubAck)
    return raw


def utf8(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def fixed_header(first: int, body: bytes) -> bytes:
    assert len(body) < 128  # one length byte is enough for these small packets
    return bytes([first, len(body)]) + body


# -- mixed fan-out ------------------------------------------------------------------------------

V5_PROPERTIES = {
    "payload_format_indicator": 1,
    "message_expiry_interval": 60,
    "content_type": "application/json",
    "response_topic": "mixed/replies",
    "correlation_data": b"\x00\x01corr",
    "user_property": [("b", "2"), ("a", "1"), ("b", "3")],
}


def test_v5_publisher_to_v311_and_v5_subscribers(broker):
    topic = f"mixed/{unique()}"
    payload = b'{"t": 21.5}'
    v311_qos0 = subscribed(broker.port, V311, topic, qos=0)
    v311_qos1 = subscribed(broker.port, V311, topic, qos=1)
    v5_sub = subscribed(broker.port, V5, topic, qos=1)
    publisher = connected(broker.port, V5)
    publisher.send_packet(Publish(topic, payload, qos=1, packet_id=9,
                                  properties=V5_PROPERTIES), V5)
    ack = publisher.recv_packet()
    assert isinstance(ack, PubAck) and ack.packet_id == 9

    # 3.1.1: exactly the 3.1.1 PUBLISH, no trace of the properties (3.1.1 section 3.3).
    expected_qos0 = fixed_header(0x30, utf8(topic) + payload)
    assert v311_qos0.recv_bytes(len(expected_qos0)) == expected_qos0
    expected_qos1 = fixed_header(0x32, utf8(topic) + b"\x00\x01" + payload)  # first id: 1
    assert v311_qos1.recv_bytes(len(expected_qos1)) == expected_qos1

    delivery = v5_sub.recv_packet()
    assert isinstance(delivery, Publish) and delivery.payload == payload and delivery.qos == 1
    props = delivery.properties
    assert list(props["user_property"]) == V5_PROPERTIES["user_property"]
    for name in ("payload_format_indicator", "content_type", "response_topic",
                 "correlation_data"):
        assert props[name] == V5_PROPERTIES[name], name
    assert 0 < props["message_expiry_interval"] <= 60
    for raw in (v311_qos0, v311_qos1, v5_sub, publisher):
        raw.close()


def test_v311_publisher_to_v5_subscriber_carries_no_properties(broker):
    topic = f"mixed/{unique()}"
    v5_qos0 = subscribed(broker.port, V5, topic, qos=0)
    v5_qos1 = subscribed(broker.port, V5, topic, qos=1)
    publisher = connected(broker.port, V311)
    publisher.send_packet(Publish(topic, b"from 3.1.1", qos=1, packet_id=4), V311)
    assert isinstance(publisher.recv_packet(), PubAck)
    # MQTT 5 PUBLISH: topic, [packet id], property length 0, payload.
    expected_qos0 = fixed_header(0x30, utf8(topic) + b"\x00" + b"from 3.1.1")
    assert v5_qos0.recv_bytes(len(expected_qos0)) == expected_qos0
    expected_qos1 = fixed_header(0x32, utf8(topic) + b"\x00\x01" + b"\x00" + b"from 3.1.1")
    assert v5_qos1.recv_bytes(len(expected_qos1)) == expected_qos1
    for raw in (v5_qos0, v5_qos1, publisher):
        raw.close()


def pinged(raw: RawClient, level: int) -> None:
    raw.send_packet(PingReq(), level)
    assert isinstance(raw.recv_packet(), PingResp)


@pytest.mark.parametrize("subscriber_reading, publisher_reading", [
    (False, False),  # both parked since CONNACK: woken by their parked watchers
    (False, True),  # the interop suite's case: a just-connected subscriber, a busy publisher
    (True, True),  # both blocked in a read
    (True, False),
], ids=["both-parked", "publisher-reading", "both-reading", "subscriber-reading"])
def test_subscribe_then_publish_on_another_connection_are_handled_in_arrival_order(
        broker, subscriber_reading, publisher_reading):
    # The interop suite's test_subscribe_options and test_request_response send a SUBSCRIBE
    # on one connection and, without waiting for SUBACK, a PUBLISH on another, and expect
    # the subscription to be in place. MQTT promises no order across connections, but
    # Mosquitto serves sockets in the order their bytes came; a broker that serves the later
    # one first loses the message whenever both arrive in one turn of its event loop. libev
    # runs the watchers that fired together last-first: before every reader went through
    # net/arrival.py, a publisher blocked in a read overtook in 18 to 20 of 20 rounds.
    rounds, delivered = 20, 0
    bystander = connected(broker.port, V311)
    for _ in range(rounds):
        topic = f"order/{unique()}"
        subscriber = connected(broker.port, V5)
        publisher = connected(broker.port, V311)
        # A connection that has just answered a PINGREQ has its reader blocked in a read (it
        # parks only after a second without traffic). The bystander's answer comes after
        # those readers went back to waiting: the broker polls for it only then.
        if subscriber_reading:
            pinged(subscriber, V5)
        if publisher_reading:
            pinged(publisher, V311)
        pinged(bystander, V311)
        subscriber.send(encode(Subscribe(1, ((topic, SubOptions(0)),)), V5))
        publisher.send(encode(Publish(topic, b"right after"), V311))
        assert isinstance(subscriber.recv_packet(), SubAck)
        # Sent once the SUBACK is here, the marker arrives for sure, and after the first
        # message if that one was routed to the subscription.
        publisher.send(encode(Publish(topic, b"marker"), V311))
        first = subscriber.recv_packet()
        assert isinstance(first, Publish)
        delivered += first.payload == b"right after"
        subscriber.close()
        publisher.close()
    bystander.close()
    assert delivered == rounds, f"the PUBLISH overtook the SUBSCRIBE in {rounds - delivered} " \
                                f"of {rounds} rounds"


# -- the server's DISCONNECT --------------------------------------------------------------------

class Bystander:
    """A v5 client connected before the trouble: it must not notice any."""

    def __init__(self, port: int) -> None:
        self.topic = f"bystander/{unique()}"
        self.raw = subscribed(port, V5, self.topic, qos=1)

    def still_fine(self) -> None:
        self.raw.send_packet(PingReq(), V5)
        assert isinstance(self.raw.recv_packet(), PingResp)
        self.raw.send_packet(Publish(self.topic, b"still here", qos=1, packet_id=77), V5)
        got = {type(self.raw.recv_packet()) for _ in range(2)}  # its PUBACK and its message
        assert got == {PubAck, Publish}


def told_and_closed(raw: RawClient, reason: int, timeout: float = TIMEOUT) -> None:
    """The next packet is DISCONNECT with `reason`, then the broker closes the socket."""
    packet = raw.recv_packet(timeout)
    while isinstance(packet, (PubAck, PubRec)):  # acks the broker sent before it gave up
        packet = raw.recv_packet(timeout)
    assert isinstance(packet, Disconnect), packet
    assert packet.reason_code == reason, f"0x{packet.reason_code:02X}, wanted 0x{reason:02X}"
    assert raw.closed_by_broker(), "the broker kept the socket open after DISCONNECT"


def closed_silently(raw: RawClient) -> None:
    """The broker closes the socket without a byte before (a 3.1.1 connection's end)."""
    raw.sock.settimeout(TIMEOUT)
    try:
        data = raw.sock.recv(100)
    except ConnectionResetError:
        data = b""
    except TimeoutError:
        pytest.fail("the broker kept the connection open")
    assert data == b"", f"the broker sent {data!r} before closing"


def v5_body(packet_type_flags: int, body: bytes) -> bytes:
    return fixed_header(packet_type_flags, body)


# Hand-made v5 packets that break one rule each: (reason, bytes after CONNECT, rule).
BAD_PACKETS = [
    pytest.param(ReasonCode.MALFORMED_PACKET,
                 v5_body(0x30, utf8("bad/props") + b"\x02\x7f\x00" + b"x"),
                 id="0x81-unknown-property-id"),  # 5.0 section 2.2.2.2
    pytest.param(ReasonCode.MALFORMED_PACKET,
                 v5_body(0x30, utf8("bad/props") + b"\x09\x02\x00\x00\x00\x3c" + b"x"),
                 id="0x81-property-length-past-the-packet"),
    pytest.param(ReasonCode.PROTOCOL_ERROR,
                 v5_body(0x30, utf8("bad/props") + b"\x08\x03\x00\x01a\x03\x00\x01b" + b"x"),
                 id="0x82-duplicate-content-type"),  # 5.0 section 2.2.2.2
    pytest.param(ReasonCode.PROTOCOL_ERROR,
                 v5_body(0x10, utf8("MQTT") + b"\x05\x02\x00\x3c\x00" + utf8("again")),
                 id="0x82-second-connect"),  # [MQTT-3.1.0-2]
    pytest.param(ReasonCode.PROTOCOL_ERROR,
                 v5_body(0x30, b"\x00\x00" + b"\x03\x23\x00\x05" + b"x"),
                 id="0x82-alias-never-set"),  # 5.0 section 3.3.2.3.4
    pytest.param(ReasonCode.TOPIC_ALIAS_INVALID,
                 v5_body(0x30, utf8("alias/zero") + b"\x03\x23\x00\x00" + b"x"),
                 id="0x94-alias-0"),
    pytest.param(ReasonCode.TOPIC_ALIAS_INVALID,
                 v5_body(0x30, utf8("alias/big") + b"\x03\x23\x00\x0b" + b"x"),
                 id="0x94-alias-above-the-maximum-of-10"),
]


@pytest.mark.parametrize(("reason", "data"), BAD_PACKETS)
def test_a_bad_packet_gets_disconnect_with_its_reason_and_only_its_connection_ends(
        broker, reason, data):
    bystander = Bystander(broker.port)
    raw = connected(broker.port, V5)
    raw.send(data)
    told_and_closed(raw, reason)
    bystander.still_fine()


def test_keepalive_timeout_gets_disconnect_0x8d(broker):
    bystander = Bystander(broker.port)
    silent = connected(broker.port, V5, keepalive=1)
    # 1.5 x keepalive without a packet [MQTT-3.1.2-22]; the watchdog looks four times a second.
    told_and_closed(silent, ReasonCode.KEEP_ALIVE_TIMEOUT, timeout=1.5 + TIMEOUT)
    bystander.still_fine()


def test_more_unreleased_qos2_than_the_receive_maximum_gets_disconnect_0x93(broker):
    bystander = Bystander(broker.port)
    raw = RawClient(broker.port, protocol_level=V5)
    raw.send_packet(Connect(unique("flood"), V5, True, 60, properties={}), V5)
    connack = raw.recv_packet()
    receive_maximum = connack.properties.get("receive_maximum", 65_535)
    assert receive_maximum < 1000, "the test needs a small receive maximum (default 20)"
    topic = f"flood/{unique()}"
    # No PUBREL: every one stays unreleased, one more than allowed.
    raw.send(b"".join(encode(Publish(topic, b"x", qos=2, packet_id=i), V5)
                      for i in range(1, receive_maximum + 2)))
    told_and_closed(raw, ReasonCode.RECEIVE_MAXIMUM_EXCEEDED)
    bystander.still_fine()


def wait_for_fin(raw: RawClient, timeout: float = TIMEOUT) -> None:
    """Until the broker has closed its side (a FIN: recv says end of stream), reading nothing."""
    raw.sock.settimeout(timeout)
    assert raw.sock.recv(1, socket.MSG_PEEK) == b"", "more bytes after DISCONNECT"


def test_client_answering_pubrecs_late_gets_the_close_not_a_reset(broker):
    # What paho's interoperability suite does (test_flow_control2): it answers each PUBREC
    # with PUBREL as it reads them, and only then comes to the DISCONNECT 0x93 behind them.
    # Those PUBRELs reach a broker that has already said goodbye. If it closed outright, the
    # kernel answers them with a reset and the client's next write fails (EPIPE): the suite
    # dies of a broken pipe instead of reporting the DISCONNECT. A broker that half-closes
    # after DISCONNECT and reads (and ignores) what still comes, until the client closes or a
    # short time passes, lets the client finish its writes and read why it was disconnected.
    raw = RawClient(broker.port, protocol_level=V5)
    raw.send_packet(Connect(unique("flood"), V5, True, 60, properties={}), V5)
    receive_maximum = raw.recv_packet().properties.get("receive_maximum", 65_535)
    topic = f"flood/{unique()}"
    raw.send(b"".join(encode(Publish(topic, b"x", qos=2, packet_id=i), V5)
                      for i in range(1, receive_maximum + 2)))
    pubrecs = []
    packet = raw.recv_packet()
    while isinstance(packet, PubRec):
        pubrecs.append(packet.packet_id)
        packet = raw.recv_packet()
    assert isinstance(packet, Disconnect), packet
    assert packet.reason_code == ReasonCode.RECEIVE_MAXIMUM_EXCEEDED
    wait_for_fin(raw)  # the broker has closed (or half-closed) its side: now answer, late
    for packet_id in pubrecs:
        try:
            raw.send_packet(PubRel(packet_id), V5)
        except (BrokenPipeError, ConnectionResetError) as exc:
            pytest.fail(f"PUBREL {packet_id} after the DISCONNECT: {exc!r}: the broker reset "
                        "the connection instead of letting the client finish")
    raw.close()


def test_packet_above_max_packet_size_gets_disconnect_0x95(broker_factory):
    broker = broker_factory("[limits]\nmax_packet_size = 1024\n")
    bystander = Bystander(broker.port)
    raw = RawClient(broker.port, protocol_level=V5)
    raw.send_packet(Connect(unique("big"), V5, True, 60, properties={}), V5)
    connack = raw.recv_packet()
    assert connack.properties["maximum_packet_size"] == 1024
    body = utf8("too/big") + b"\x00" + b"x" * 2000
    raw.send(bytes([0x30]) + bytes([0x80 | (len(body) & 0x7F), len(body) >> 7]) + body)
    told_and_closed(raw, ReasonCode.PACKET_TOO_LARGE)
    bystander.still_fine()


def test_shutdown_tells_v5_clients_0x8b_and_closes_v311_ones(broker_factory):
    broker = broker_factory()
    v5_clients = [connected(broker.port, V5) for _ in range(2)]
    v311 = connected(broker.port, V311)
    broker.signal(signal.SIGTERM)
    for raw in v5_clients:
        told_and_closed(raw, ReasonCode.SERVER_SHUTTING_DOWN)
    closed_silently(v311)  # 3.1.1 has no server DISCONNECT
    assert broker.proc is not None and broker.proc.wait(TIMEOUT * 2) == 0


def test_v311_client_gets_no_disconnect_packet_for_a_bad_packet(broker):
    # The same malformed input that gets a v5 client DISCONNECT 0x81 just closes a 3.1.1
    # connection: 3.1.1 has no DISCONNECT from the server [MQTT-4.8.0-1].
    raw = connected(broker.port, V311)
    raw.send(v5_body(0x30, b"\x00\x03a\x00b" + b"x"))  # U+0000 in a topic [MQTT-1.5.3-2]
    closed_silently(raw)

"""PUBLISH at QoS 0, 1 and 2 in both directions, with the full acknowledgement flows."""

from __future__ import annotations

import time

import pytest
from support.clients import PahoClient, RawClient, expect_marker, unique

from broker.codec import (
    ConnAck,
    Connect,
    Disconnect,
    PingReq,
    PingResp,
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


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_paho_round_trip_at_each_qos(broker, qos):
    topic = f"{unique('flow')}/q{qos}"
    sub = PahoClient(broker.port)
    sub.connect()
    assert sub.subscribe(topic, qos) == [qos]
    pub = PahoClient(broker.port)
    pub.connect()
    pub.publish(topic, b"payload-%d" % qos, qos=qos)
    [message] = sub.expect(1)
    assert (message.topic, message.payload, message.qos, message.retain) == \
        (topic, b"payload-%d" % qos, qos, False)
    expect_marker(sub, pub, topic)  # one copy only
    pub.disconnect()
    sub.disconnect()


@pytest.mark.parametrize(("pub_qos", "sub_qos", "delivered"), [(2, 0, 0), (2, 1, 1), (1, 2, 1),
                                                                (0, 2, 0)])
def test_delivery_qos_is_the_lower_of_publish_and_granted(broker, pub_qos, sub_qos, delivered):
    topic = f"{unique('downgrade')}/x"
    sub = PahoClient(broker.port)
    sub.connect()
    sub.subscribe(topic, sub_qos)
    pub = PahoClient(broker.port)
    pub.connect()
    pub.publish(topic, b"x", qos=pub_qos)
    assert sub.expect(1)[0].qos == delivered
    pub.disconnect()
    sub.disconnect()


def test_qos1_publish_is_acknowledged_with_its_packet_id_byte_exact(broker):
    raw = RawClient(broker.port)
    raw.connect()
    raw.send(bytes.fromhex("320a00036162630102") + b"hey")
    assert raw.recv_bytes(4) == bytes.fromhex("40020102")


def test_inbound_qos2_resent_before_pubrel_is_forwarded_once(broker):
    topic = f"{unique('exactly')}/once"
    sub = PahoClient(broker.port)
    sub.connect()
    sub.subscribe(topic, 2)
    pub = RawClient(broker.port)
    pub.connect()
    pub.send_packet(Publish(topic, b"only once", qos=2, packet_id=7))
    assert pub.recv_packet() == PubRec(7)
    pub.send_packet(Publish(topic, b"only once", qos=2, dup=True, packet_id=7))
    assert pub.recv_packet() == PubRec(7)  # [MQTT-4.3.3-2]: acknowledged again, not forwarded
    pub.send_packet(PubRel(7))
    assert pub.recv_packet() == PubComp(7)
    assert [m.payload for m in sub.expect(1)] == [b"only once"]
    # After PUBREL the id is free: the same id now carries a new message, which a second
    # "only once" would have come before.
    pub.send_packet(Publish(topic, b"a new message", qos=2, packet_id=7))
    assert pub.recv_packet() == PubRec(7)
    pub.send_packet(PubRel(7))
    assert pub.recv_packet() == PubComp(7)
    assert [m.payload for m in sub.expect(1)] == [b"a new message"]
    sub.disconnect()


def test_pubrel_for_an_unknown_id_still_gets_pubcomp(broker):
    raw = RawClient(broker.port)
    raw.connect()
    raw.send_packet(PubRel(4242))
    assert raw.recv_packet() == PubComp(4242)


def test_unacknowledged_qos1_resent_with_dup_in_order_on_reconnect(broker):
    client_id = unique("resend")
    topic = f"{client_id}/t"
    sub = RawClient(broker.port)
    assert sub.connect(client_id, clean=False) == ConnAck(0, False)
    sub.subscribe(topic, qos=1)
    pub = PahoClient(broker.port)
    pub.connect()
    for i in range(3):
        pub.publish(topic, b"m%d" % i, qos=1)
    first = [sub.recv_packet() for _ in range(3)]
    assert [(p.payload, p.dup) for p in first] == [(b"m0", False), (b"m1", False), (b"m2", False)]
    sub.close()  # no PUBACK sent for any of them
    again = RawClient(broker.port)
    assert again.connect(client_id, clean=False) == ConnAck(0, True)
    resent = [again.recv_packet() for _ in range(3)]
    assert [(p.payload, p.dup, p.packet_id) for p in resent] == \
        [(b"m0", True, first[0].packet_id), (b"m1", True, first[1].packet_id),
         (b"m2", True, first[2].packet_id)]
    for p in resent:
        again.send_packet(PubAck(p.packet_id))
    pub.publish(topic, b"m3", qos=1)
    fresh = again.recv_packet()
    assert (fresh.payload, fresh.dup) == (b"m3", False)
    pub.disconnect()


def test_outgoing_qos2_in_pubrec_state_gets_pubrel_resent_on_reconnect(broker):
    client_id = unique("pubrel")
    topic = f"{client_id}/t"
    sub = RawClient(broker.port)
    sub.connect(client_id, clean=False)
    sub.subscribe(topic, qos=2)
    pub = PahoClient(broker.port)
    pub.connect()
    pub.publish(topic, b"q2", qos=2)
    delivered = sub.recv_packet()
    assert (delivered.payload, delivered.qos) == (b"q2", 2)
    sub.send_packet(PubRec(delivered.packet_id))
    assert sub.recv_packet() == PubRel(delivered.packet_id)
    sub.close()  # PUBCOMP never sent
    again = RawClient(broker.port)
    assert again.connect(client_id, clean=False) == ConnAck(0, True)
    assert again.recv_packet() == PubRel(delivered.packet_id)  # not the PUBLISH again
    again.send_packet(PubComp(delivered.packet_id))
    pub.publish(topic, b"next", qos=2)
    assert again.recv_packet().payload == b"next"
    pub.disconnect()


def test_qos0_payload_bytes_arrive_unchanged(broker):
    topic = f"{unique('binary')}/x"
    payload = bytes(range(256)) * 4 + b"\x00\xff\xfe"
    sub = PahoClient(broker.port)
    sub.connect()
    sub.subscribe(topic, 0)
    pub = PahoClient(broker.port)
    pub.connect()
    pub.publish(topic, payload)
    assert sub.expect(1)[0].payload == payload
    pub.disconnect()
    sub.disconnect()


def test_many_packets_in_one_write_are_all_handled(broker):
    topic = f"{unique('batch')}/x"
    sub = PahoClient(broker.port)
    sub.connect()
    sub.subscribe(topic, 1)
    raw = RawClient(broker.port)
    raw.connect()
    raw.send(b"".join(encode(Publish(topic, b"%d" % i, qos=1, packet_id=i + 1))
                      for i in range(50)))
    acks = [raw.recv_packet() for _ in range(50)]
    assert acks == [PubAck(i + 1) for i in range(50)]
    assert [m.payload for m in sub.expect(50)] == [b"%d" % i for i in range(50)]
    sub.disconnect()


def test_puback_for_an_unknown_id_is_ignored_but_for_a_qos2_message_closes(broker):
    client_id = unique("wrongack")
    topic = f"{client_id}/t"
    sub = RawClient(broker.port)
    sub.connect(client_id)
    sub.subscribe(topic, qos=2)
    sub.send_packet(PubAck(999))  # nothing in flight with that id: ignored
    pub = PahoClient(broker.port)
    pub.connect()
    pub.publish(topic, b"q2", qos=2)
    delivered = sub.recv_packet()
    assert delivered.qos == 2
    broker.mark_log()
    sub.send_packet(PubAck(delivered.packet_id))  # QoS 2 is answered with PUBREC, not PUBACK
    assert sub.closed_by_broker()
    broker.wait_for_log(rf"closing {client_id} .*PUBACK for packet id {delivered.packet_id}")
    pub.disconnect()


def _delivered_to_raw(broker, level: int, qos: int) -> tuple[RawClient, str, int]:
    """A raw subscriber at `level` holding one QoS `qos` delivery it has not acknowledged:
    (client, client id, packet id)."""
    client_id = unique(f"ack{level}")
    topic = f"{client_id}/t"
    raw = RawClient(broker.port, protocol_level=level)
    raw.send_packet(Connect(client_id, level, True, 60), level)
    assert raw.recv_packet().reason_code == 0
    raw.send_packet(Subscribe(1, ((topic, SubOptions(qos)),)), level)
    assert isinstance(raw.recv_packet(), SubAck)
    pub = PahoClient(broker.port)
    pub.connect()
    pub.publish(topic, b"m", qos=qos)
    pub.disconnect()
    delivered = raw.recv_packet()
    assert isinstance(delivered, Publish) and delivered.qos == qos, delivered
    return raw, client_id, delivered.packet_id


# (QoS of the delivery, acks the client sends with its packet id, what the log names)
WRONG_ACKS = [
    (1, [PubRec], "PUBREC for packet id {}, a QoS 1 message"),
    (1, [PubComp], "PUBCOMP for packet id {}, a QoS 1 message"),
    (2, [PubComp], "PUBCOMP for packet id {} before its PUBREC"),
    (2, [PubAck], "PUBACK for packet id {}, a QoS 2 message"),
    (2, [PubRec, PubAck], "PUBACK for packet id {}, a QoS 2 message"),
]


@pytest.mark.parametrize("level", [4, 5], ids=["3.1.1", "5"])
@pytest.mark.parametrize(("qos", "acks", "logged"), WRONG_ACKS,
                         ids=["pubrec-for-qos1", "pubcomp-for-qos1", "pubcomp-before-pubrec",
                              "puback-for-qos2", "puback-after-pubrec"])
def test_wrong_type_acknowledgement_closes_the_connection(broker, level, qos, acks, logged):
    """The acknowledgement of another QoS's flow is a protocol violation [MQTT-4.8.0-1]: the
    connection closes (MQTT 5: DISCONNECT 0x82 first), as Mosquitto does, and the log says
    why. No PUBREL answers a PUBREC for a QoS 1 message."""
    raw, client_id, packet_id = _delivered_to_raw(broker, level, qos)
    broker.mark_log()
    for ack in acks[:-1]:  # the right acknowledgements before the wrong one
        raw.send_packet(ack(packet_id), level)
        assert raw.recv_packet() == PubRel(packet_id)
    raw.send_packet(acks[-1](packet_id), level)
    if level == 5:
        packet = raw.recv_packet()
        assert packet == Disconnect(ReasonCode.PROTOCOL_ERROR), packet
    assert raw.closed_by_broker(), "connection left open"
    assert raw.decoder.buffered() == 0, "the broker answered before closing"
    line = broker.wait_for_log(rf"closing {client_id} from .*").group(0)
    assert f"protocol error: {logged.format(packet_id)}" in line, line


def test_mqtt5_failure_pubrec_for_a_qos1_message_closes_with_0x82(broker):
    raw, client_id, packet_id = _delivered_to_raw(broker, 5, 1)
    broker.mark_log()
    raw.send_packet(PubRec(packet_id, ReasonCode.UNSPECIFIED_ERROR), 5)
    assert raw.recv_packet() == Disconnect(ReasonCode.PROTOCOL_ERROR)
    assert raw.closed_by_broker()
    broker.wait_for_log(rf"closing {client_id} .*PUBREC for packet id {packet_id}, a QoS 1")


@pytest.mark.parametrize("level", [4, 5], ids=["3.1.1", "5"])
def test_acknowledgements_for_unknown_ids_are_tolerated(broker, level):
    """A late duplicate (an ack for an id no longer in flight) is no violation: PUBACK and
    PUBCOMP are ignored, PUBREC is answered with PUBREL, as Mosquitto does."""
    raw, _client_id, packet_id = _delivered_to_raw(broker, level, 1)
    raw.send_packet(PubAck(packet_id), level)
    raw.send_packet(PubAck(packet_id), level)  # again: no longer in flight
    raw.send_packet(PubComp(4321), level)
    raw.send_packet(PubRec(4322), level)
    assert raw.recv_packet() == PubRel(4322)
    raw.send_packet(PubComp(4322), level)
    raw.send_packet(PingReq(), level)
    assert raw.recv_packet() == PingResp()


def test_qos2_pubrec_resent_gets_pubrel_again_and_pubcomp_completes(broker):
    raw, _client_id, packet_id = _delivered_to_raw(broker, 4, 2)
    raw.send_packet(PubRec(packet_id))
    assert raw.recv_packet() == PubRel(packet_id)
    raw.send_packet(PubRec(packet_id))  # its PUBREL was lost: a duplicate PUBREC is fine
    assert raw.recv_packet() == PubRel(packet_id)
    raw.send_packet(PubComp(packet_id))
    raw.send_packet(PubComp(packet_id))  # a late duplicate: ignored
    raw.send_packet(PingReq())
    assert raw.recv_packet() == PingResp()


@pytest.mark.slow
def test_clients_idle_past_the_reader_release_still_publish_and_receive(broker):
    # After PARK_AFTER (1 s) without traffic a connection gives up its reader greenlet;
    # the next bytes bring one back, on both the publishing and the subscribing side.
    topic = f"{unique('parked')}/t"
    sub = RawClient(broker.port)
    sub.connect(unique("parked-sub"), keepalive=0)
    sub.subscribe(topic, qos=1)
    pub = RawClient(broker.port)
    pub.connect(unique("parked-pub"), keepalive=0)
    for round_trip in range(2):
        time.sleep(1.6)  # longer than the release delay: both readers are parked now
        pub.send_packet(Publish(topic, b"after idle %d" % round_trip, qos=1, packet_id=5))
        assert pub.recv_packet() == PubAck(5)
        delivered = sub.recv_packet()
        assert delivered.payload == b"after idle %d" % round_trip
        sub.send_packet(PubAck(delivered.packet_id))


def test_packets_right_after_connack_are_served_however_they_arrive(broker):
    # A plain TCP reader parks as soon as it has answered CONNECT: what comes next, whole,
    # in pieces with pauses, or in the same write as the CONNECT, wakes a new reader.
    topic = f"{unique('first')}/t"
    pieces = RawClient(broker.port)
    assert pieces.connect(unique("first-pieces")) == ConnAck(0, False)
    subscribe = encode(Subscribe(7, ((topic, SubOptions(1)),)))
    for piece in (subscribe[:3], subscribe[3:]):
        time.sleep(0.2)  # the first piece waits in the decoder of a parked connection
        pieces.send(piece)
    assert pieces.recv_packet() == SubAck(7, (1,))
    together = RawClient(broker.port)
    together.send(encode(Connect(unique("first-together"))) + encode(
        Publish(topic, b"with the CONNECT", qos=1, packet_id=3)))
    assert together.recv_packet() == ConnAck(0, False)
    assert together.recv_packet() == PubAck(3)
    assert pieces.recv_packet().payload == b"with the CONNECT"


def test_a_subscriber_that_stops_reading_gets_everything_in_order_later(broker):
    # 4 MiB of QoS 0 does not fit in the socket buffers: the direct flush writes what fits
    # and the writer greenlet sends the rest once the subscriber reads again.
    topic = f"{unique('slow')}/t"
    sub = RawClient(broker.port)
    sub.connect(unique("slow-sub"))
    sub.subscribe(topic, qos=0)
    pub = RawClient(broker.port)
    pub.connect(unique("fast-pub"))
    chunk = 4096
    payloads = [b"%06d" % i + b"." * (chunk - 6) for i in range(1024)]
    pub.send(b"".join(encode(Publish(topic, p)) for p in payloads))
    pub.send_packet(Publish(topic, b"end", qos=1, packet_id=1))
    assert pub.recv_packet(timeout=20) == PubAck(1)  # the publisher was never held back
    got = []
    while len(got) < len(payloads) + 1:
        got.append(sub.recv_packet(timeout=20).payload)
    assert got == [*payloads, b"end"]

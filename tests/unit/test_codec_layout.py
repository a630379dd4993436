"""The codec's encoders for fan-out, against wire bytes written by hand from the spec: a
PUBLISH laid out once per message and put together per delivery, a received MQTT 3.x PUBLISH
(or MQTT 5 one with property length 0) reused with a new header byte and packet id, and the
four-byte success acks. Then hypothesis: whichever of these paths a `Message` takes, its bytes
are those `encode` gives the packet."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.wire import drain, h

from broker.codec import FrameDecoder, PubAck, PubComp, Publish, PubRec, PubRel, encode
from broker.codec.acks import (
    encode_puback_success,
    encode_pubcomp_success,
    encode_pubrec_success,
    encode_pubrel_success,
)
from broker.codec.publish import (
    lay_out_publish,
    publish_qos0,
    publish_with_id,
    splice_publish,
    splice_publish_v5,
)
from broker.core.message import Message


class Delivery(NamedTuple):
    name: str
    topic: str
    payload: bytes
    properties: dict[str, Any]
    level: int
    qos: int
    retain: bool
    dup: bool
    packet_id: int
    wire: str


B124 = " 42" * 124  # with topic "t": remaining length 127 without a packet id, 129 with one

DELIVERIES = [
    Delivery("qos0", "a/b", b"hi", {}, 4, 0, False, False, 0, "30 07 00 03 61 2F 62 68 69"),
    Delivery("qos0_retained_empty_payload", "a/b", b"", {}, 4, 0, True, False, 0,
             "31 05 00 03 61 2F 62"),
    Delivery("qos1", "a/b", b"x", {}, 4, 1, False, False, 1, "32 08 00 03 61 2F 62 00 01 78"),
    Delivery("qos2_dup_retain_packet_id_ffff", "t", b"\x00\x01", {}, 4, 2, True, True, 0xFFFF,
             "3D 07 00 01 74 FF FF 00 01"),
    Delivery("qos1_level_3", "t", b"!", {}, 3, 1, False, False, 7, "32 06 00 01 74 00 07 21"),
    Delivery("qos0_remaining_length_127", "t", b"B" * 124, {}, 4, 0, False, False, 0,
             "30 7F 00 01 74" + B124),
    Delivery("qos1_packet_id_makes_remaining_length_two_bytes", "t", b"B" * 124, {}, 4, 1,
             False, False, 9, "32 81 01 00 01 74 00 09" + B124),
    Delivery("qos0_level_5_no_properties", "t", b"h", {}, 5, 0, False, False, 0,
             "30 05 00 01 74 00 68"),
    # message expiry 0x02 = 30: the packet id sits between the topic and the properties
    Delivery("qos1_level_5_packet_id_before_properties", "a", b"p",
             {"message_expiry_interval": 30}, 5, 1, False, False, 5,
             "32 0C 00 01 61 00 05 05 02 00 00 00 1E 70"),
    Delivery("qos0_level_4_leaves_out_properties", "a", b"p", {"message_expiry_interval": 30},
             4, 0, False, False, 0, "30 04 00 01 61 70"),
]


def _params(cases: list[Any]) -> list[Any]:
    return [pytest.param(c, id=c.name) for c in cases]


@pytest.mark.parametrize("case", _params(DELIVERIES))
def test_delivery_from_a_layout_is_the_spec_bytes(case: Delivery):
    layout = lay_out_publish(case.topic, case.payload, case.level, case.properties)
    if case.qos:
        wire = publish_with_id(layout, case.payload, case.qos, case.retain, case.dup,
                               case.packet_id)
    else:
        wire = publish_qos0(layout, case.payload, case.retain)
    assert wire.hex(" ") == h(case.wire).hex(" ")


@pytest.mark.parametrize("case", _params(DELIVERIES))
def test_delivery_from_a_layout_decodes_to_its_packet(case: Delivery):
    decoder = FrameDecoder(server_side=False, protocol_level=case.level)
    decoder.feed(h(case.wire))
    properties = case.properties if case.level >= 5 else {}
    assert drain(decoder) == [Publish(case.topic, case.payload, case.qos, case.retain, case.dup,
                                      case.packet_id, properties)]


def test_one_layout_serves_every_delivery_of_a_message():
    layout = lay_out_publish("a/b", b"x", 4)
    assert publish_qos0(layout, b"x", False) == h("30 06 00 03 61 2F 62 78")
    assert publish_with_id(layout, b"x", 1, False, False, 1) == h("32 08 00 03 61 2F 62 00 01 78")
    assert publish_with_id(layout, b"x", 2, True, True, 2) == h("3D 08 00 03 61 2F 62 00 02 78")


class Splice(NamedTuple):
    name: str
    received: str  # an MQTT 3.x QoS 1/2 PUBLISH as a client sent it
    qos: int
    retain: bool
    dup: bool
    packet_id: int
    wire: str  # the delivery: a new header byte and packet id around the received bytes
    level: int = 4


SPLICES = [
    Splice("qos1_sent_on_with_a_new_packet_id", "32 08 00 03 61 2F 62 00 01 78", 1, False,
           False, 0x0102, "32 08 00 03 61 2F 62 01 02 78"),
    Splice("qos2_sent_as_qos1_retained", "34 08 00 03 61 2F 62 00 07 78", 1, True, False, 9,
           "33 08 00 03 61 2F 62 00 09 78"),
    Splice("qos1_resent_as_qos2_dup", "32 08 00 03 61 2F 62 00 01 78", 2, False, True, 0xFFFF,
           "3C 08 00 03 61 2F 62 FF FF 78"),
    Splice("retained_qos1_sent_on_with_retain_0", "33 06 00 01 74 00 04 7A", 1, False, False, 5,
           "32 06 00 01 74 00 05 7A"),
    Splice("two_byte_remaining_length_kept", "32 81 01 00 01 74 00 09" + B124, 2, False, False, 3,
           "34 81 01 00 01 74 00 03" + B124),
    Splice("empty_payload", "32 05 00 01 74 00 01", 1, False, False, 2, "32 05 00 01 74 00 02"),
    Splice("level_3", "32 06 00 01 74 00 07 21", 2, False, False, 8, "34 06 00 01 74 00 08 21",
           3),
    # MQTT 5, property length 0: the new packet id goes before that 0x00, as it came
    Splice("v5_qos1_new_packet_id_then_property_length_0", "32 09 00 03 61 2F 62 00 01 00 78",
           1, False, False, 0x0102, "32 09 00 03 61 2F 62 01 02 00 78", 5),
    Splice("v5_qos2_sent_as_qos1_retained_dup", "34 06 00 01 74 00 07 00", 1, True, True, 9,
           "3B 06 00 01 74 00 09 00", 5),
    Splice("v5_two_byte_remaining_length_kept", "32 81 01 00 01 74 00 09 00" + B124[3:], 2,
           False, False, 3, "34 81 01 00 01 74 00 03 00" + B124[3:], 5),
]


def _received(wire: str, level: int = 4) -> Publish:
    decoder = FrameDecoder(protocol_level=level)
    decoder.feed(h(wire))
    [packet] = drain(decoder)
    return packet


@pytest.mark.parametrize("case", _params(SPLICES))
def test_received_qos1_or_2_publish_is_spliced_into_the_spec_bytes(case: Splice):
    packet = _received(case.received, case.level)
    splice = splice_publish_v5 if case.level >= 5 else splice_publish
    wire = splice(packet.forwardable, packet.payload, case.qos, case.retain, case.dup,
                  case.packet_id)
    assert wire.hex(" ") == h(case.wire).hex(" ")


@pytest.mark.parametrize(("received", "retained", "level"), [
    pytest.param("30 07 00 03 61 2F 62 68 69", False, 4, id="qos0"),
    pytest.param("31 07 00 03 61 2F 62 68 69", True, 4, id="qos0_retained"),
    pytest.param("30 08 00 03 61 2F 62 00 68 69", False, 5, id="v5_qos0_property_length_0"),
    pytest.param("31 08 00 03 61 2F 62 00 68 69", True, 5, id="v5_qos0_retained"),
])
def test_received_qos0_publish_is_sent_on_as_it_came(received: str, retained: bool,
                                                     level: int):
    packet = _received(received, level)
    assert packet.forwardable == h(received)
    message = Message("a/b", b"hi", 0, retained)
    message.forward_as_received(packet.forwardable, level >= 5)
    assert message.wire(0, retained, False, 0, level) is packet.forwardable
    # Existing subscribers get retain 0 [MQTT-3.3.1-9]: a retained original does not serve them.
    assert message.wire(0, False, False, 0, level) == h(received[:1] + "0" + received[2:])


@pytest.mark.parametrize("received", [
    pytest.param("30 09 00 01 74 04 03 00 01 61 68", id="content_type"),
    pytest.param("32 0C 00 01 74 00 01 05 02 00 00 00 1E 68", id="message_expiry"),
    pytest.param("30 07 00 00 03 23 00 01 68", id="topic_alias"),
])
def test_an_mqtt_5_publish_with_properties_keeps_nothing_to_forward(received: str):
    # Its properties may change per hop (expiry, alias): laid out from the message instead.
    assert _received(received, 5).forwardable is None


class Ack(NamedTuple):
    name: str
    encoder: Callable[[int], bytes]
    packet: Any
    wire: str


SUCCESS_ACKS = [
    Ack("puback", encode_puback_success, PubAck(1), "40 02 00 01"),
    Ack("pubrec", encode_pubrec_success, PubRec(0x1234), "50 02 12 34"),
    Ack("pubrel_flags_0010", encode_pubrel_success, PubRel(2), "62 02 00 02"),  # [MQTT-3.6.1-1]
    Ack("pubcomp_packet_id_ffff", encode_pubcomp_success, PubComp(0xFFFF), "70 02 FF FF"),
]


@pytest.mark.parametrize("case", _params(SUCCESS_ACKS))
@pytest.mark.parametrize("level", [3, 4, 5])
def test_success_ack_is_four_bytes_at_every_level(case: Ack, level: int):
    wire = case.encoder(case.packet.packet_id)
    assert wire.hex(" ") == h(case.wire).hex(" ")
    assert wire == encode(case.packet, level)
    decoder = FrameDecoder(protocol_level=level)
    decoder.feed(wire)
    assert drain(decoder) == [case.packet]


# ------------------------------------------------------------------------------ hypothesis

topics = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Cn"), blacklist_characters="+#"),
                 min_size=1, max_size=20)
deliveries = st.tuples(st.integers(0, 2), st.booleans(), st.booleans(), st.integers(1, 0xFFFF))


@settings(max_examples=200, deadline=None)
@given(topic=topics, payload=st.binary(max_size=300), qos=st.integers(0, 2),
       retain=st.booleans(), sends=st.lists(st.tuples(deliveries, st.sampled_from([3, 4, 5])),
                                            min_size=1, max_size=6))
def test_every_path_of_a_message_gives_the_bytes_encode_gives(topic: str, payload: bytes,
                                                              qos: int, retain: bool,
                                                              sends: list[Any]):
    """However a message was received and in whichever order its deliveries come, each one is
    the PUBLISH `encode` writes for it: the caches change the cost, never the bytes."""
    for level_in, forwarded in ((4, False), (4, True), (5, True)):
        received = encode(Publish(topic, payload, qos, retain, False, 1 if qos else 0),
                          level_in)
        decoder = FrameDecoder(protocol_level=level_in)
        decoder.feed(received)
        packet = drain(decoder)[0]
        message = Message(packet.topic, packet.payload, qos, retain)
        if forwarded:
            message.forward_as_received(packet.forwardable, level_in >= 5)
        for (out_qos, out_retain, dup, packet_id), level in sends:
            dup = dup and bool(out_qos)
            packet_id = packet_id if out_qos else 0
            expected = encode(Publish(topic, payload, out_qos, out_retain, dup, packet_id), level)
            assert message.wire(out_qos, out_retain, dup, packet_id, level) == expected

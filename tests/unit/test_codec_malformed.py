"""The codec against malformed input: a catalogue of wire bytes, each with the exception and
reason code it must raise and the rule it breaks, fed whole and one byte at a time; and the
packet size limits, which must hold on a packet's header alone so a huge declared length
holds no memory."""

from __future__ import annotations

from typing import Any, NamedTuple

import pytest
from support.wire import (
    C1_CONNECT_BODY_TAIL,
    MQISDP,
    MQTT,
    drain,
    first_error_bytewise,
    h,
    varint,
)

from broker.codec import CONNECT_PACKET_LIMIT, Connect, FrameDecoder, Publish
from broker.errors import (
    MalformedPacket,
    MQTTError,
    PacketTooLarge,
    ProtocolError,
    ReasonCode,
    UnsupportedProtocolVersion,
)


class Bad(NamedTuple):
    name: str
    wire: str
    error: type[MQTTError]
    reason: int
    server_side: bool = True
    level: int = 4


MAL = ReasonCode.MALFORMED_PACKET
PROTO = ReasonCode.PROTOCOL_ERROR

BAD: list[Bad] = [
    Bad("reserved_packet_type_0 (3.1.1 section 2.2.1)", "00 00", MalformedPacket, MAL),
    Bad("reserved_packet_type_0_client_side (3.1.1 section 2.2.1)", "00 00", MalformedPacket, MAL,
        False),
    # Fixed-header flags of every type but PUBLISH are fixed [MQTT-2.2.2-2]
    Bad("pubrel_flags_0000 [MQTT-3.6.1-1]", "60 02 00 01", MalformedPacket, MAL),
    Bad("subscribe_flags_0000 [MQTT-3.8.1-1]", "80 06 00 01 00 01 61 00", MalformedPacket, MAL),
    Bad("unsubscribe_flags_0000 [MQTT-3.10.1-1]", "A0 05 00 01 00 01 61", MalformedPacket, MAL),
    Bad("pingreq_flags_0001 [MQTT-2.2.2-2]", "C1 00", MalformedPacket, MAL),
    Bad("puback_flags_0010 [MQTT-2.2.2-2]", "42 02 00 01", MalformedPacket, MAL),
    Bad("connect_flags_0001 [MQTT-2.2.2-2]", f"11 0E {MQTT} 04 02 {C1_CONNECT_BODY_TAIL}",
        MalformedPacket, MAL),
    Bad("disconnect_flags_1000 [MQTT-2.2.2-2]", "E8 00", MalformedPacket, MAL),
    Bad("connack_flags_0001 [MQTT-2.2.2-2]", "21 02 00 00", MalformedPacket, MAL, False),
    Bad("remaining_length_five_bytes [MQTT-1.5.5-1]", "30 FF FF FF FF 7F", MalformedPacket, MAL),
    Bad("remaining_length_five_bytes_client_side [MQTT-1.5.5-1]", "30 FF FF FF FF 7F",
        MalformedPacket, MAL, False),
    Bad("publish_qos_3 [MQTT-3.3.1-4]", "36 05 00 01 74 00 01", MalformedPacket, MAL),
    Bad("publish_dup_on_qos_0 [MQTT-3.3.1-2]", "38 04 00 01 74 68", MalformedPacket, MAL),
    Bad("publish_topic_with_plus [MQTT-3.3.2-2]", "30 05 00 03 61 2F 2B", MalformedPacket, MAL),
    Bad("publish_topic_with_hash [MQTT-3.3.2-2]", "30 03 00 01 23", MalformedPacket, MAL),
    Bad("publish_topic_with_hash_v5 [MQTT-3.3.2-2]", "30 04 00 01 23 00", MalformedPacket,
        MAL, True, 5),
    Bad("publish_empty_topic_level_4 [MQTT-4.7.3-1]", "30 02 00 00", MalformedPacket, MAL),
    Bad("publish_qos1_empty_topic_level_4 [MQTT-4.7.3-1]", "32 04 00 00 00 01",
        MalformedPacket, MAL),
    Bad("publish_topic_overlong_nul_C0_80 [MQTT-1.5.3-1]", "30 04 00 02 C0 80",
        MalformedPacket, MAL),
    Bad("publish_topic_surrogate_ED_A0_80 [MQTT-1.5.3-1]", "30 05 00 03 ED A0 80",
        MalformedPacket, MAL),
    Bad("publish_topic_byte_FF [MQTT-1.5.3-1]", "30 03 00 01 FF", MalformedPacket, MAL),
    Bad("publish_topic_truncated_sequence [MQTT-1.5.3-1]", "30 04 00 02 61 C3",
        MalformedPacket, MAL),
    Bad("publish_topic_with_U+0000 [MQTT-1.5.3-2]", "30 05 00 03 61 00 62", MalformedPacket, MAL),
    Bad("connect_client_id_ill_formed_utf8 [MQTT-1.5.3-1]",
        f"10 0E {MQTT} 04 02 00 3C 00 02 C0 80", MalformedPacket, MAL),
    Bad("connect_user_name_with_U+0000 [MQTT-1.5.3-2]",
        f"10 11 {MQTT} 04 82 00 3C 00 02 63 31 00 01 00", MalformedPacket, MAL),
    Bad("subscribe_filter_with_U+0000 [MQTT-1.5.3-2]", "82 06 00 01 00 01 00 00",
        MalformedPacket, MAL),
    Bad("unsubscribe_filter_surrogate [MQTT-1.5.3-1]", "A2 07 00 01 00 03 ED B0 80",
        MalformedPacket, MAL),
    Bad("publish_qos1_packet_id_0 [MQTT-2.3.1-1]", "32 05 00 01 74 00 00", MalformedPacket, MAL),
    Bad("publish_qos2_packet_id_0 [MQTT-2.3.1-1]", "34 05 00 01 74 00 00", MalformedPacket, MAL),
    Bad("puback_packet_id_0 [MQTT-2.3.1-1]", "40 02 00 00", MalformedPacket, MAL),
    Bad("pubrec_packet_id_0 [MQTT-2.3.1-1]", "50 02 00 00", MalformedPacket, MAL),
    Bad("pubrel_packet_id_0 [MQTT-2.3.1-1]", "62 02 00 00", MalformedPacket, MAL),
    Bad("pubcomp_packet_id_0 [MQTT-2.3.1-1]", "70 02 00 00", MalformedPacket, MAL),
    Bad("subscribe_packet_id_0 [MQTT-2.3.1-1]", "82 06 00 00 00 01 61 00", MalformedPacket, MAL),
    Bad("unsubscribe_packet_id_0 [MQTT-2.3.1-1]", "A2 05 00 00 00 01 61", MalformedPacket, MAL),
    Bad("suback_packet_id_0 [MQTT-2.3.1-1]", "90 03 00 00 00", MalformedPacket, MAL, False),
    Bad("unsuback_packet_id_0 [MQTT-2.3.1-1]", "B0 02 00 00", MalformedPacket, MAL, False),
    Bad("subscribe_without_filters [MQTT-3.8.3-3]", "82 02 00 01", MalformedPacket, MAL),
    Bad("unsubscribe_without_filters [MQTT-3.10.3-2]", "A2 02 00 01", MalformedPacket, MAL),
    Bad("subscribe_requested_qos_reserved_bit_0x04 [MQTT-3.8.3-4]", "82 06 00 01 00 01 61 04",
        MalformedPacket, MAL),
    Bad("subscribe_requested_qos_reserved_bit_0x80 [MQTT-3.8.3-4]", "82 06 00 01 00 01 61 80",
        MalformedPacket, MAL),
    Bad("subscribe_requested_qos_3 [MQTT-3.8.3-4]", "82 06 00 01 00 01 61 03",
        MalformedPacket, MAL),
    Bad("subscribe_second_filter_qos_3 [MQTT-3.8.3-4]", "82 0A 00 01 00 01 61 00 00 01 62 03",
        MalformedPacket, MAL),
    Bad("subscribe_v5_options_reserved_bits_0xC0 [MQTT-3.8.3-5]", "82 07 00 01 00 00 01 61 C0",
        MalformedPacket, MAL, True, 5),
    Bad("subscribe_v5_retain_handling_3 [MQTT-3.8.3-5]", "82 07 00 01 00 00 01 61 30",
        ProtocolError, PROTO, True, 5),
    Bad("connect_reserved_flag [MQTT-3.1.2-3]", f"10 0E {MQTT} 04 03 {C1_CONNECT_BODY_TAIL}",
        MalformedPacket, MAL),
    Bad("connect_will_qos_without_will_flag [MQTT-3.1.2-13]",
        f"10 0E {MQTT} 04 0A {C1_CONNECT_BODY_TAIL}", MalformedPacket, MAL),
    Bad("connect_will_retain_without_will_flag [MQTT-3.1.2-15]",
        f"10 0E {MQTT} 04 22 {C1_CONNECT_BODY_TAIL}", MalformedPacket, MAL),
    Bad("connect_will_qos_3 [MQTT-3.1.2-14]",
        f"10 13 {MQTT} 04 1E {C1_CONNECT_BODY_TAIL} 00 01 74 00 00", MalformedPacket, MAL),
    Bad("connect_password_without_user_name [MQTT-3.1.2-22]",
        f"10 11 {MQTT} 04 42 {C1_CONNECT_BODY_TAIL} 00 01 70", MalformedPacket, MAL),
    Bad("connect_mqisdp_password_without_user_name [MQTT-3.1.2-22]",
        f"10 13 {MQISDP} 03 42 {C1_CONNECT_BODY_TAIL} 00 01 70", MalformedPacket, MAL),
    Bad("connect_will_topic_with_wildcard [MQTT-3.1.2-9] [MQTT-4.7.1-1]",
        f"10 14 {MQTT} 04 06 {C1_CONNECT_BODY_TAIL} 00 01 23 00 01 78", MalformedPacket, MAL),
    Bad("connect_unknown_protocol_name [MQTT-3.1.2-1]", f"10 0E 00 04 4D 51 54 58 04 02 "
        f"{C1_CONNECT_BODY_TAIL}", MalformedPacket, MAL),
    Bad("connect_unsupported_level_6 [MQTT-3.1.2-2]", f"10 0E {MQTT} 06 02 {C1_CONNECT_BODY_TAIL}",
        UnsupportedProtocolVersion, ReasonCode.UNSUPPORTED_PROTOCOL_VERSION),
    Bad("connect_mqtt_name_with_level_3 [MQTT-3.1.2-2]",
        f"10 0E {MQTT} 03 02 {C1_CONNECT_BODY_TAIL}",
        UnsupportedProtocolVersion, ReasonCode.UNSUPPORTED_PROTOCOL_VERSION),
    Bad("connect_mqisdp_name_with_level_4 [MQTT-3.1.2-2]",
        f"10 10 {MQISDP} 04 02 {C1_CONNECT_BODY_TAIL}",
        UnsupportedProtocolVersion, ReasonCode.UNSUPPORTED_PROTOCOL_VERSION),
    # Truncated: the remaining length covers less than the fields claim (3.1.1 section 2.2.3)
    Bad("connect_client_id_length_runs_past_the_end", f"10 0E {MQTT} 04 02 00 3C 00 05 63 31",
        MalformedPacket, MAL),
    Bad("connect_ends_after_keepalive", f"10 0A {MQTT} 04 02 00 3C", MalformedPacket, MAL),
    Bad("connect_will_flag_without_will_fields", f"10 0E {MQTT} 04 06 {C1_CONNECT_BODY_TAIL}",
        MalformedPacket, MAL),
    Bad("connect_user_name_flag_without_user_name", f"10 0E {MQTT} 04 82 {C1_CONNECT_BODY_TAIL}",
        MalformedPacket, MAL),
    Bad("publish_topic_length_runs_past_the_end", "30 03 00 05 61", MalformedPacket, MAL),
    Bad("publish_qos1_without_packet_id", "32 03 00 01 74", MalformedPacket, MAL),
    Bad("publish_one_byte_body", "30 01 00", MalformedPacket, MAL),
    Bad("puback_one_byte_body", "40 01 00", MalformedPacket, MAL),
    Bad("subscribe_filter_without_options_byte", "82 05 00 01 00 01 61", MalformedPacket, MAL),
    Bad("unsubscribe_filter_length_runs_past_the_end", "A2 05 00 01 00 09 61",
        MalformedPacket, MAL),
    Bad("connack_one_byte_body", "20 01 00", MalformedPacket, MAL, False),
    Bad("suback_without_return_codes", "90 02 00 01", MalformedPacket, MAL, False),
    Bad("publish_v5_property_length_runs_past_the_end", "30 05 00 01 74 05 02",
        MalformedPacket, MAL, True, 5),
    Bad("publish_v5_without_property_length", "30 03 00 01 74", MalformedPacket, MAL, True, 5),
    # ... and longer than the fields need is malformed too
    Bad("pingreq_with_a_body_byte (3.1.1 section 3.12)", "C0 01 00", MalformedPacket, MAL),
    Bad("disconnect_level_4_with_a_body_byte (3.1.1 section 3.14)", "E0 01 00", MalformedPacket,
        MAL),
    Bad("puback_level_4_with_extra_byte", "40 03 00 01 00", MalformedPacket, MAL),
    Bad("pubrel_level_4_with_extra_bytes", "62 04 00 01 00 00", MalformedPacket, MAL),
    Bad("connect_extra_byte_after_payload", f"10 0F {MQTT} 04 02 {C1_CONNECT_BODY_TAIL} 00",
        MalformedPacket, MAL),
    Bad("connack_level_4_extra_byte", "20 03 00 00 00", MalformedPacket, MAL, False),
    Bad("unsuback_level_4_extra_byte", "B0 03 00 01 00", MalformedPacket, MAL, False),
    Bad("pingresp_with_a_body_byte", "D0 01 00", MalformedPacket, MAL, False),
    # Packets only a server sends, sent to a server (and the other way round)
    Bad("connack_to_server", "20 02 00 00", ProtocolError, PROTO),
    Bad("suback_to_server", "90 03 00 01 00", ProtocolError, PROTO),
    Bad("unsuback_to_server", "B0 02 00 01", ProtocolError, PROTO),
    Bad("pingresp_to_server", "D0 00", ProtocolError, PROTO),
    Bad("pingreq_to_client", "C0 00", ProtocolError, PROTO, False),
    Bad("subscribe_to_client", "82 06 00 01 00 01 61 00", ProtocolError, PROTO, False),
    Bad("unsubscribe_to_client", "A2 05 00 01 00 01 61", ProtocolError, PROTO, False),
    Bad("connect_to_client", f"10 0E {MQTT} 04 02 {C1_CONNECT_BODY_TAIL}", ProtocolError, PROTO,
        False),
    Bad("auth_at_level_4 (type 15 is reserved in 3.1.1)", "F0 00", MalformedPacket, MAL),
    Bad("auth_at_level_3", "F0 00", MalformedPacket, MAL, True, 3),
    # MQTT 5 properties (5.0 section 2.2.2.2)
    Bad("v5_unknown_property_identifier", "40 05 00 01 10 01 7F", MalformedPacket, MAL, True, 5),
    Bad("v5_property_not_valid_for_the_packet_is_malformed (5.0 2.2.2.2)",
        "40 07 00 01 10 03 23 00 01", MalformedPacket, MAL, True, 5),
    Bad("v5_property_twice_is_a_protocol_error (5.0 section 3.3.2.3)",
        "30 0E 00 01 74 0A 02 00 00 00 01 02 00 00 00 02", ProtocolError, PROTO, True, 5),
    Bad("v5_property_value_truncated", "40 06 00 01 10 02 1F 00", MalformedPacket, MAL, True, 5),
    Bad("v5_reason_string_ill_formed_utf8 [MQTT-1.5.4-1]", "40 08 00 01 10 04 1F 00 01 FF",
        MalformedPacket, MAL, True, 5),
    Bad("v5_user_property_value_with_U+0000 [MQTT-1.5.4-2]",
        "40 0B 00 01 10 07 26 00 01 6B 00 01 00", MalformedPacket, MAL, True, 5),
    Bad("v5_disconnect_property_length_runs_past_the_end", "E0 02 00 05", MalformedPacket, MAL,
        True, 5),
]


def _bad_params() -> list[Any]:
    return [pytest.param(b, id=b.name) for b in BAD]


@pytest.mark.parametrize("bad", _bad_params())
def test_malformed_input_raises_its_error_and_reason_fed_whole(bad: Bad):
    decoder = FrameDecoder(server_side=bad.server_side, protocol_level=bad.level)
    decoder.feed(h(bad.wire))
    with pytest.raises(MQTTError) as info:
        decoder.next_packet()
    assert type(info.value) is bad.error
    assert info.value.reason_code == bad.reason


@pytest.mark.parametrize("bad", _bad_params())
def test_malformed_input_raises_its_error_fed_one_byte_at_a_time(bad: Bad):
    decoder = FrameDecoder(server_side=bad.server_side, protocol_level=bad.level)
    raised, _at = first_error_bytewise(decoder, h(bad.wire))
    assert type(raised) is bad.error
    assert raised.reason_code == bad.reason


def test_unsupported_level_is_reported_with_the_level_in_the_message():
    decoder = FrameDecoder()
    decoder.feed(h(f"10 0E {MQTT} 06 02 {C1_CONNECT_BODY_TAIL}"))
    with pytest.raises(UnsupportedProtocolVersion, match="level 6"):
        decoder.next_packet()


# 200,000,000 = 95*128^3 + 47*128^2 + 4*128 + 0 -> 80 84 AF 5F
HEADER_200MB = "30 80 84 AF 5F"


def test_packet_over_max_packet_size_is_refused_on_its_header_alone():
    decoder = FrameDecoder(server_side=False, max_packet_size=1024 * 1024)
    decoder.feed(h(HEADER_200MB))  # no body at all: the header must be enough
    with pytest.raises(PacketTooLarge) as info:
        decoder.next_packet()
    assert info.value.reason_code == ReasonCode.PACKET_TOO_LARGE
    assert "200000005" in info.value.message


def test_max_packet_size_counts_the_fixed_header():
    # PUBLISH "t" + 3 payload bytes: remaining 6, total 8 bytes.
    wire = h("30 06 00 01 74 61 62 63")
    fits = FrameDecoder(server_side=False, max_packet_size=8)
    fits.feed(wire)
    assert fits.next_packet() == Publish("t", b"abc")
    over = FrameDecoder(server_side=False, max_packet_size=7)
    over.feed(wire[:2])
    with pytest.raises(PacketTooLarge):
        over.next_packet()


def test_before_connect_a_huge_declared_length_is_refused_on_its_header():
    decoder = FrameDecoder()  # server side, default (maximal) max_packet_size
    decoder.feed(h("10 80 84 AF 5F"))
    with pytest.raises(PacketTooLarge):
        decoder.next_packet()
    assert decoder.buffered() == 5


def test_connect_packet_limit_is_inclusive_before_connect():
    # A total of exactly CONNECT_PACKET_LIMIT bytes waits for its body; one more is refused.
    assert CONNECT_PACKET_LIMIT == 512 * 1024
    remaining = CONNECT_PACKET_LIMIT - 4  # 1 type byte + 3 length bytes
    at_limit = FrameDecoder()
    at_limit.feed(b"\x10" + varint(remaining))
    assert at_limit.next_packet() is None
    over = FrameDecoder()
    over.feed(b"\x10" + varint(remaining + 1))
    with pytest.raises(PacketTooLarge):
        over.next_packet()


def test_connect_packet_limit_lifts_after_connect():
    decoder = FrameDecoder()
    decoder.feed(h(f"10 0E {MQTT} 04 02 {C1_CONNECT_BODY_TAIL}") + h(HEADER_200MB))
    assert decoder.next_packet() == Connect("c1")
    assert decoder.next_packet() is None  # waits for the 200 MB body instead of refusing


def test_connect_packet_limit_does_not_raise_a_smaller_configured_maximum():
    decoder = FrameDecoder(max_packet_size=100)
    decoder.feed(h("10 65"))  # remaining 101
    with pytest.raises(PacketTooLarge, match="limit of 100 bytes"):
        decoder.next_packet()


def test_a_large_packet_fed_in_pieces_is_not_returned_early():
    payload = bytes(range(256)) * 1000
    wire = b"\x30" + varint(3 + len(payload)) + h("00 01 74") + payload
    decoder = FrameDecoder(server_side=False)
    for start in range(0, len(wire), 65536):
        assert decoder.next_packet() is None
        decoder.feed(wire[start:start + 65536])
    assert drain(decoder) == [Publish("t", payload)]
    assert decoder.buffered() == 0

"""The MQTT 5 codec against input that breaks a rule it can check without state: a catalogue
of wire bytes, each with the exception, the reason code the connection answers with (0x81
malformed, 0x82 protocol error, or the code the spec names) and the rule, fed whole and one
byte at a time to the side that receives it. Then the reason-code table against the comments
of `ReasonCode`, so the two cannot drift apart."""

from __future__ import annotations

import inspect
import re
from typing import Any, NamedTuple

import pytest
from support.wire import MQTT, first_error_bytewise, h

from broker import errors
from broker.codec import FrameDecoder
from broker.codec.reasons import REASONS
from broker.errors import MalformedPacket, MQTTError, ProtocolError, ReasonCode


class Bad(NamedTuple):
    name: str
    wire: str
    error: type[MQTTError]
    reason: int
    server_side: bool = True  # False: a client-side decoder (the packet came from a server)


MAL = ReasonCode.MALFORMED_PACKET
PROTO = ReasonCode.PROTOCOL_ERROR
CONNECT_HEAD = f"{MQTT} 05 02 00 3C"  # "MQTT", level 5, clean start, keep alive 60
ONE_TOPIC_FILTER = "00 01 61 00"  # filter "a", options 0


def connect(props: str, length: int) -> str:
    """A v5 CONNECT with client id "c" and these properties (`length` bytes of them)."""
    return f"10 {10 + 1 + length + 3:02X} {CONNECT_HEAD} {length:02X} {props} 00 01 63"


def will(props: str, length: int) -> str:
    """A v5 CONNECT with a will (topic "t", empty message) carrying these will properties."""
    return (f"10 {10 + 1 + 3 + 1 + length + 5:02X} {MQTT} 05 06 00 3C 00 00 01 63"
            f" {length:02X} {props} 00 01 74 00 00")


def connack(props: str, length: int) -> str:
    return f"20 {3 + length:02X} 00 00 {length:02X} {props}"


def publish(props: str, length: int, first: str = "30") -> str:
    """A v5 PUBLISH to "t" with these properties and the payload "x"."""
    return f"{first} {3 + 1 + length + 1:02X} 00 01 74 {length:02X} {props} 78"


BAD: list[Bad] = [
    # --------------------------------------------- property table (5.0 section 2.2.2.2)
    Bad("unknown_property_identifier_0x00", publish("00 00", 2), MalformedPacket, MAL),
    Bad("unknown_property_identifier_0x7F_in_connect", connect("7F 00", 2), MalformedPacket,
        MAL),
    Bad("topic_alias_in_will_properties", will("23 00 01", 3), MalformedPacket, MAL),
    Bad("subscription_identifier_in_will_properties", will("0B 01", 2), MalformedPacket, MAL),
    Bad("session_expiry_interval_in_will_properties", will("11 00 00 00 01", 5),
        MalformedPacket, MAL),
    Bad("will_delay_interval_in_publish", publish("18 00 00 00 01", 5), MalformedPacket, MAL),
    Bad("session_expiry_interval_in_publish", publish("11 00 00 00 01", 5), MalformedPacket,
        MAL),
    Bad("reason_string_in_connect", connect("1F 00 01 78", 4), MalformedPacket, MAL),
    Bad("assigned_client_identifier_in_connect", connect("12 00 01 78", 4), MalformedPacket,
        MAL),
    Bad("request_problem_information_in_connack", connack("17 01", 2), MalformedPacket, MAL,
        False),
    Bad("server_keep_alive_in_disconnect", "E0 05 00 03 13 00 0A", MalformedPacket, MAL),
    Bad("authentication_method_in_disconnect", "E0 06 00 04 15 00 01 78", MalformedPacket,
        MAL),
    Bad("topic_alias_in_subscribe", f"82 0A 00 01 03 23 00 01 {ONE_TOPIC_FILTER}",
        MalformedPacket, MAL),
    Bad("subscription_identifier_in_unsubscribe", "A2 08 00 01 02 0B 01 00 01 61",
        MalformedPacket, MAL),
    Bad("topic_alias_in_puback", "40 07 00 01 10 03 23 00 01", MalformedPacket, MAL, False),
    # --------------------------------------------- lengths that lie (1.5.5, 2.2.2.1)
    Bad("connect_property_length_runs_past_the_packet", f"10 0E {CONNECT_HEAD} 20 00 01 63",
        MalformedPacket, MAL),
    Bad("connect_without_property_length", f"10 0A {CONNECT_HEAD}", MalformedPacket, MAL),
    Bad("will_property_length_runs_past_the_packet",
        f"10 14 {MQTT} 05 06 00 3C 00 00 01 63 20 00 01 74 00 00", MalformedPacket, MAL),
    Bad("connack_without_property_length", "20 02 00 00", MalformedPacket, MAL, False),
    Bad("connack_property_length_runs_past_the_packet", "20 04 00 00 05 24", MalformedPacket,
        MAL, False),
    Bad("subscribe_property_length_runs_past_the_packet", f"82 07 00 01 09 {ONE_TOPIC_FILTER}",
        MalformedPacket, MAL),
    Bad("puback_property_length_runs_past_the_packet", "40 05 00 01 10 04 1F", MalformedPacket,
        MAL, False),
    Bad("auth_property_length_runs_past_the_packet", "F0 03 18 09 15", MalformedPacket, MAL),
    Bad("property_length_five_byte_varint [MQTT-1.5.5-1]", "30 09 00 01 74 FF FF FF FF 7F 78",
        MalformedPacket, MAL),
    Bad("u32_property_value_cut_by_the_property_length", publish("02 00 00", 3),
        MalformedPacket, MAL),
    Bad("user_property_with_a_name_and_no_value", publish("26 00 01 6B", 4), MalformedPacket,
        MAL),
    Bad("subscription_identifier_five_byte_varint [MQTT-1.5.5-1]",
        "30 0A 00 01 74 06 0B FF FF FF FF 7F", MalformedPacket, MAL, False),
    Bad("content_type_ill_formed_utf8 [MQTT-1.5.4-1]", publish("03 00 01 C0", 4),
        MalformedPacket, MAL),
    Bad("user_property_name_with_U+0000 [MQTT-1.5.4-2]", publish("26 00 01 00 00 01 76", 7),
        MalformedPacket, MAL),
    # --------------------------------------------- a property twice (5.0 section 3)
    Bad("session_expiry_interval_twice_in_connect",
        connect("11 00 00 00 01 11 00 00 00 02", 10), ProtocolError, PROTO),
    Bad("payload_format_indicator_twice_in_publish", publish("01 00 01 01", 4), ProtocolError,
        PROTO),
    Bad("topic_alias_twice_in_publish", publish("23 00 01 23 00 01", 6), ProtocolError, PROTO),
    Bad("reason_string_twice_in_puback", "40 0C 00 01 10 08 1F 00 01 61 1F 00 01 62",
        ProtocolError, PROTO, False),
    Bad("subscription_identifier_twice_in_subscribe (5.0 section 3.8.2.1.2)",
        f"82 0B 00 01 04 0B 01 0B 02 {ONE_TOPIC_FILTER}", ProtocolError, PROTO),
    Bad("authentication_method_twice_in_auth", "F0 0A 18 08 15 00 01 61 15 00 01 62",
        ProtocolError, PROTO),
    Bad("will_delay_interval_twice", will("18 00 00 00 01 18 00 00 00 01", 10), ProtocolError,
        PROTO),
    # --------------------------------------------- values a property cannot take
    Bad("payload_format_indicator_2_in_publish", publish("01 02", 2), ProtocolError, PROTO),
    Bad("payload_format_indicator_2_in_will", will("01 02", 2), ProtocolError, PROTO),
    Bad("request_response_information_2", connect("19 02", 2), ProtocolError, PROTO),
    Bad("request_problem_information_2", connect("17 02", 2), ProtocolError, PROTO),
    Bad("receive_maximum_0_in_connect", connect("21 00 00", 3), ProtocolError, PROTO),
    Bad("maximum_packet_size_0_in_connect", connect("27 00 00 00 00", 5), ProtocolError, PROTO),
    Bad("authentication_data_without_method_in_connect", connect("16 00 01 01", 4),
        ProtocolError, PROTO),
    Bad("receive_maximum_0_in_connack", connack("21 00 00", 3), ProtocolError, PROTO, False),
    Bad("maximum_packet_size_0_in_connack", connack("27 00 00 00 00", 5), ProtocolError, PROTO,
        False),
    Bad("maximum_qos_2_in_connack", connack("24 02", 2), ProtocolError, PROTO, False),
    Bad("retain_available_2", connack("25 02", 2), ProtocolError, PROTO, False),
    Bad("wildcard_subscription_available_2", connack("28 02", 2), ProtocolError, PROTO, False),
    Bad("subscription_identifier_available_2", connack("29 02", 2), ProtocolError, PROTO, False),
    Bad("shared_subscription_available_2", connack("2A 02", 2), ProtocolError, PROTO, False),
    Bad("subscription_identifier_0_in_subscribe", f"82 09 00 01 02 0B 00 {ONE_TOPIC_FILTER}",
        ProtocolError, PROTO),
    Bad("subscription_identifier_0_in_publish_from_the_server", publish("0B 00", 2),
        ProtocolError, PROTO, False),
    Bad("topic_alias_0 [MQTT-3.3.2-8]", publish("23 00 00", 3), ProtocolError,
        ReasonCode.TOPIC_ALIAS_INVALID),
    Bad("topic_alias_0_from_the_server [MQTT-3.3.2-8]", publish("23 00 00", 3), ProtocolError,
        ReasonCode.TOPIC_ALIAS_INVALID, False),
    Bad("response_topic_with_wildcard [MQTT-3.3.2-14]", publish("08 00 03 72 2F 23", 6),
        ProtocolError, PROTO),
    Bad("will_response_topic_with_wildcard [MQTT-3.3.2-14]", will("08 00 01 2B", 4),
        ProtocolError, PROTO),
    Bad("empty_response_topic [MQTT-4.7.3-1]", publish("08 00 00", 3), ProtocolError, PROTO),
    # --------------------------------------------- PUBLISH
    Bad("subscription_identifier_from_a_client [MQTT-3.3.4-6]", publish("0B 05", 2),
        ProtocolError, PROTO),
    Bad("empty_topic_without_topic_alias (5.0 section 3.3.2.1)", "30 04 00 00 00 78",
        ProtocolError, PROTO),
    Bad("qos1_empty_topic_without_topic_alias (5.0 section 3.3.2.1)", "32 06 00 00 00 01 00 78",
        ProtocolError, PROTO),
    Bad("empty_topic_with_only_a_user_property (5.0 section 3.3.2.1)",
        "30 0A 00 00 07 26 00 01 6B 00 01 76", ProtocolError, PROTO),
    Bad("topic_with_wildcard [MQTT-3.3.2-2]", "30 05 00 01 2B 00 78", MalformedPacket, MAL),
    Bad("qos1_packet_id_0 [MQTT-2.2.1-3]", "32 06 00 01 74 00 00 00", MalformedPacket, MAL),
    # --------------------------------------------- reason codes (5.0 section 2.4)
    Bad("puback_reason_0x92 [MQTT-3.4.2-1]", "40 03 00 01 92", ProtocolError, PROTO, False),
    Bad("pubrec_reason_0x04 [MQTT-3.5.2-1]", "50 03 00 01 04", ProtocolError, PROTO, False),
    Bad("pubrel_reason_0x10 [MQTT-3.6.2-1]", "62 03 00 01 10", ProtocolError, PROTO),
    Bad("pubcomp_reason_0x80 [MQTT-3.7.2-1]", "70 03 00 01 80", ProtocolError, PROTO),
    Bad("connack_reason_0x10 [MQTT-3.2.2-8]", "20 03 00 10 00", ProtocolError, PROTO, False),
    Bad("connack_reason_0x01_the_3.1.1_code [MQTT-3.2.2-8]", "20 03 00 01 00", ProtocolError,
        PROTO, False),
    Bad("suback_reason_0x11 [MQTT-3.9.3-2]", "90 05 00 01 00 00 11", ProtocolError, PROTO,
        False),
    Bad("unsuback_reason_0x01 [MQTT-3.11.3-2]", "B0 05 00 01 00 00 01", ProtocolError, PROTO,
        False),
    Bad("disconnect_reason_0x18 [MQTT-3.14.2-1]", "E0 01 18", ProtocolError, PROTO),
    Bad("disconnect_reason_0x01 [MQTT-3.14.2-1]", "E0 01 01", ProtocolError, PROTO, False),
    Bad("auth_reason_0x04 [MQTT-3.15.2-1]", "F0 06 04 04 15 00 01 78", ProtocolError, PROTO),
    # --------------------------------------------- CONNACK, DISCONNECT, AUTH
    Bad("connack_refused_with_session_present [MQTT-3.2.2-6]", "20 03 01 87 00", ProtocolError,
        PROTO, False),
    Bad("connack_reserved_flag_bits [MQTT-3.2.2-1]", "20 03 02 00 00", MalformedPacket, MAL,
        False),
    Bad("disconnect_from_the_server_with_session_expiry [MQTT-3.14.2-2]",
        "E0 07 00 05 11 00 00 00 00", ProtocolError, PROTO, False),
    Bad("disconnect_reserved_flags [MQTT-3.14.1-1]", "E1 00", MalformedPacket, MAL),
    Bad("auth_reserved_flags [MQTT-3.15.1-1]", "F2 00", MalformedPacket, MAL),
    Bad("auth_without_authentication_method (5.0 section 3.15.2.2.2)", "F0 02 18 00",
        ProtocolError, PROTO),
    Bad("auth_success_spelled_out_without_method (5.0 section 3.15.2.2.2)", "F0 01 00",
        ProtocolError, PROTO, False),
    Bad("auth_with_only_authentication_data (5.0 section 3.15.2.2.3)", "F0 06 18 04 16 00 01 01",
        ProtocolError, PROTO),
    # --------------------------------------------- SUBSCRIBE, SUBACK, UNSUBACK
    Bad("subscribe_options_reserved_bit_6 [MQTT-3.8.3-5]", "82 07 00 01 00 00 01 61 40",
        MalformedPacket, MAL),
    Bad("subscribe_options_reserved_bit_7 [MQTT-3.8.3-5]", "82 07 00 01 00 00 01 61 80",
        MalformedPacket, MAL),
    Bad("subscribe_options_qos_3 (5.0 section 3.8.3.1)", "82 07 00 01 00 00 01 61 03",
        ProtocolError, PROTO),
    Bad("subscribe_options_qos_3_and_reserved_bit [MQTT-3.8.3-5]", "82 07 00 01 00 00 01 61 43",
        MalformedPacket, MAL),
    Bad("subscribe_second_filter_retain_handling_3 (5.0 section 3.8.3.1)",
        "82 0B 00 01 00 00 01 61 00 00 01 62 31", ProtocolError, PROTO),
    Bad("subscribe_no_local_on_a_shared_subscription [MQTT-3.8.3-4]",
        "82 10 00 01 00 00 0A 24 73 68 61 72 65 2F 67 2F 65 04", ProtocolError, PROTO),
    Bad("subscribe_without_filters [MQTT-3.8.3-2]", "82 03 00 01 00", ProtocolError, PROTO),
    Bad("unsubscribe_without_filters [MQTT-3.10.3-2]", "A2 03 00 01 00", ProtocolError, PROTO),
    Bad("suback_without_reason_codes", "90 03 00 01 00", MalformedPacket, MAL, False),
    Bad("unsuback_without_reason_codes", "B0 03 00 01 00", MalformedPacket, MAL, False),
    Bad("puback_extra_byte_after_properties", "40 05 00 01 10 00 00", MalformedPacket, MAL,
        False),
]


def _bad_params() -> list[Any]:
    return [pytest.param(b, id=b.name) for b in BAD]


def test_catalogue_names_are_unique():
    assert len({b.name for b in BAD}) == len(BAD)


@pytest.mark.parametrize("bad", _bad_params())
def test_v5_bad_input_raises_its_error_and_reason_fed_whole(bad: Bad):
    decoder = FrameDecoder(server_side=bad.server_side, protocol_level=5)
    decoder.feed(h(bad.wire))
    with pytest.raises(MQTTError) as info:
        decoder.next_packet()
    assert type(info.value) is bad.error
    assert info.value.reason_code == bad.reason


@pytest.mark.parametrize("bad", _bad_params())
def test_v5_bad_input_raises_its_error_fed_one_byte_at_a_time(bad: Bad):
    decoder = FrameDecoder(server_side=bad.server_side, protocol_level=5)
    wire = h(bad.wire)
    raised, at = first_error_bytewise(decoder, wire)
    assert type(raised) is bad.error
    assert raised.reason_code == bad.reason
    assert at == len(wire) - 1, "raised before the packet was complete"


def test_the_same_bytes_are_fine_from_the_side_that_may_send_them():
    # A subscription identifier: server to client only [MQTT-3.3.4-6]; a session expiry on
    # DISCONNECT: client to server only [MQTT-3.14.2-2].
    for wire, from_client in ((publish("0B 05", 2), False), ("E0 07 00 05 11 00 00 00 00", True)):
        decoder = FrameDecoder(server_side=from_client, protocol_level=5)
        decoder.feed(h(wire))
        assert decoder.next_packet() is not None


def test_at_level_4_the_v5_rules_do_not_apply():
    # The same topic-alias-0 bytes at 3.1.1 are a PUBLISH whose payload starts with 03 23 00 00
    # (no properties in 3.1.1): MQTT 3.x decoding is unchanged.
    decoder = FrameDecoder(protocol_level=4)
    decoder.feed(h(publish("23 00 00", 3)))
    packet = decoder.next_packet()
    assert (packet.topic, packet.payload) == ("t", h("03 23 00 00 78"))


@pytest.mark.parametrize(("wire", "error", "level"), [
    pytest.param(connect("21 00 00", 3), ProtocolError, 5, id="v5_receive_maximum_0"),
    pytest.param(connect("23 00 01", 3), MalformedPacket, 5, id="v5_topic_alias_in_connect"),
    pytest.param(f"10 0E {MQTT} 04 03 00 3C 00 02 63 31", MalformedPacket, 4,
                 id="v4_reserved_flag"),
    pytest.param(f"10 0E {MQTT} 06 02 00 3C 00 02 63 31", MQTTError, 4, id="level_6"),
    pytest.param("10 03 00 04 4D", MalformedPacket, 4, id="cut_in_the_protocol_name"),
])
def test_a_refused_connect_still_tells_its_level(wire: str, error: type[MQTTError], level: int):
    # The connection answers a bad MQTT 5 CONNECT with a v5 CONNACK carrying the reason
    # (5.0 section 4.13.1); it can only if the decoder says which level the CONNECT spoke.
    decoder = FrameDecoder()
    decoder.feed(h(wire))
    with pytest.raises(error):
        decoder.next_packet()
    assert decoder.protocol_level == level


def _codes_by_packet_from_reason_code_comments() -> dict[str, set[int]]:
    """ReasonCode's own comments ("... = 0x87  # CONNACK PUBACK ...") as packet -> codes."""
    by_packet: dict[str, set[int]] = {packet: set() for packet in REASONS}
    for line in inspect.getsource(errors.ReasonCode).splitlines():
        match = re.match(r"\s+\w+ = 0x([0-9A-F]{2})  # (.*)", line)
        if match:
            for word in re.findall(r"[A-Z]+", match.group(2)):
                if word in by_packet:
                    by_packet[word].add(int(match.group(1), 16))
    return by_packet


def test_reason_code_table_agrees_with_the_comments_of_reason_code():
    from_comments = _codes_by_packet_from_reason_code_comments()
    assert sum(map(len, from_comments.values())) > 80  # the comments were found
    assert {packet: set(codes) for packet, (codes, _rule) in REASONS.items()} == from_comments

"""The MQTT 5 codec against wire bytes written by hand from the 5.0 specification.

A catalogue of named wire cases in the style of `test_codec.py`: every MQTT 5 packet, every
property at least once in a packet it belongs to, reason codes and the short forms. Each case
is decoded (fed whole and one byte at a time, by the side of the connection that receives it)
and encoded, and the cases of one side decode as one stream. Non-canonical forms the spec
allows (a success reason code spelled out, an empty property length) decode to the same
packet, and the encoder writes the short form instead. Malformed MQTT 5 input is in
`test_codec_v5_malformed.py`; hypothesis round trips in `test_codec_v5_roundtrip.py`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import pytest
from support.wire import MQTT, drain, h

from broker.codec import (
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    FrameDecoder,
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
    UnsubAck,
    Unsubscribe,
    Will,
    encode,
)
from broker.codec.properties import PROPERTY_IDS
from broker.errors import ReasonCode

CLIENT, SERVER = "client", "server"  # who sends the packet; the other side decodes it


class Case(NamedTuple):
    name: str
    wire: str  # hex, spaces allowed
    packet: Any
    sender: str = CLIENT


SCRAM = "53 43 52 41 4D"  # "SCRAM"
USER_AB = "26 00 01 61 00 01 62"  # user property ("a", "b")
USER_KV = "26 00 01 6B 00 01 76"  # user property ("k", "v")
SHARE_G_E = "24 73 68 61 72 65 2F 67 2F 65"  # "$share/g/e"

CASES: list[Case] = [
    # ------------------------------------------------------------------------- CONNECT
    Case("connect_every_connect_property",
         # properties (40 bytes, 5.0 section 3.1.2.11): session expiry 0x11 = 3600, receive
         # maximum 0x21 = 20, maximum packet size 0x27 = 4096, topic alias maximum 0x22 = 10,
         # request response information 0x19 = 1, request problem information 0x17 = 0,
         # user property 0x26, authentication method 0x15 "SCRAM", authentication data 0x16
         f"10 36 {MQTT} 05 02 00 1E 28 11 00 00 0E 10 21 00 14 27 00 00 10 00 22 00 0A 19 01"
         f" 17 00 {USER_KV} 15 00 05 {SCRAM} 16 00 02 01 02 00 01 63",
         Connect("c", 5, True, 30, properties={
             "session_expiry_interval": 3600, "receive_maximum": 20,
             "maximum_packet_size": 4096, "topic_alias_maximum": 10,
             "request_response_information": 1, "request_problem_information": 0,
             "user_property": [("k", "v")], "authentication_method": "SCRAM",
             "authentication_data": b"\x01\x02"})),
    Case("connect_will_with_every_will_property_user_password",
         # flags 0xF6: user, password, will retain, will QoS 2, will, clean start. Will
         # properties (46 bytes, 5.0 section 3.1.3.2): will delay 0x18 = 60, payload format
         # 0x01 = 1, message expiry 0x02 = 300, content type 0x03 "text/plain", response
         # topic 0x08 "reply", correlation data 0x09, user property
         f"10 4E {MQTT} 05 F6 00 00 00 00 01 77 2E 18 00 00 00 3C 01 01 02 00 00 01 2C"
         " 03 00 0A 74 65 78 74 2F 70 6C 61 69 6E 08 00 05 72 65 70 6C 79 09 00 03 AA BB CC"
         f" {USER_AB} 00 03 77 2F 74 00 04 67 6F 6E 65 00 01 75 00 01 70",
         Connect("w", 5, True, 0, Will("w/t", b"gone", 2, True, {
             "will_delay_interval": 60, "payload_format_indicator": 1,
             "message_expiry_interval": 300, "content_type": "text/plain",
             "response_topic": "reply", "correlation_data": b"\xaa\xbb\xcc",
             "user_property": [("a", "b")]}), "u", b"p")),
    Case("connect_clean_start_0_no_properties",
         f"10 0E {MQTT} 05 00 00 3C 00 00 01 78", Connect("x", 5, False, 60)),
    # ------------------------------------------------------------------------- CONNACK
    Case("connack_every_connack_property",
         # properties (75 bytes, 5.0 section 3.2.2.3): session expiry 0xFFFFFFFF, receive
         # maximum 100, maximum QoS 1, retain available 0, maximum packet size 65536, assigned
         # client id "auto", topic alias maximum 5, reason string "ok", user property,
         # wildcard / subscription identifier / shared subscription available 0 / 1 / 0,
         # server keep alive 120, response information "resp/", server reference "host",
         # authentication method "SCRAM", authentication data
         "20 4E 01 00 4B 11 FF FF FF FF 21 00 64 24 01 25 00 27 00 01 00 00 12 00 04 61 75 74"
         " 6F 22 00 05 1F 00 02 6F 6B 26 00 01 78 00 01 79 28 00 29 01 2A 00 13 00 78 1A 00 05"
         f" 72 65 73 70 2F 1C 00 04 68 6F 73 74 15 00 05 {SCRAM} 16 00 01 FF",
         ConnAck(ReasonCode.SUCCESS, True, {
             "session_expiry_interval": 0xFFFFFFFF, "receive_maximum": 100, "maximum_qos": 1,
             "retain_available": 0, "maximum_packet_size": 65536,
             "assigned_client_identifier": "auto", "topic_alias_maximum": 5,
             "reason_string": "ok", "user_property": [("x", "y")],
             "wildcard_subscription_available": 0, "subscription_identifier_available": 1,
             "shared_subscription_available": 0, "server_keep_alive": 120,
             "response_information": "resp/", "server_reference": "host",
             "authentication_method": "SCRAM", "authentication_data": b"\xff"}), SERVER),
    Case("connack_refused_server_moved_with_server_reference",
         "20 0D 00 9D 0A 1C 00 07 6F 74 68 65 72 3A 31",
         ConnAck(ReasonCode.SERVER_MOVED, False, {"server_reference": "other:1"}), SERVER),
    Case("connack_refused_bad_authentication_method", "20 03 00 8C 00",
         ConnAck(ReasonCode.BAD_AUTHENTICATION_METHOD), SERVER),
    # ------------------------------------------------------------------------- PUBLISH
    Case("publish_qos1_every_message_property_a_client_sends",
         # properties (41 bytes, 5.0 section 3.3.2.3): payload format 0, message expiry 10,
         # topic alias 2, response topic "r/1", correlation data, two user properties with
         # the same name (their order is kept [MQTT-3.3.2-18]), content type "bin"
         "32 33 00 03 61 2F 62 01 02 29 01 00 02 00 00 00 0A 23 00 02 08 00 03 72 2F 31"
         " 09 00 02 00 FF 26 00 01 6B 00 01 31 26 00 01 6B 00 01 32 03 00 03 62 69 6E 68 69",
         Publish("a/b", b"hi", 1, packet_id=0x0102, properties={
             "payload_format_indicator": 0, "message_expiry_interval": 10, "topic_alias": 2,
             "response_topic": "r/1", "correlation_data": b"\x00\xff",
             "user_property": [("k", "1"), ("k", "2")], "content_type": "bin"})),
    Case("publish_subscription_identifiers_1_and_268435455_from_the_server",
         "30 0B 00 01 74 07 0B 01 0B FF FF FF 7F",  # 268,435,455 = FF FF FF 7F (1.5.5)
         Publish("t", b"", properties={"subscription_identifier": [1, 268_435_455]}), SERVER),
    Case("publish_qos2_dup_retain_topic_and_alias_sets_the_alias",
         "3D 0A 00 01 74 00 09 03 23 00 01 78",
         Publish("t", b"x", 2, True, True, 9, {"topic_alias": 1})),
    Case("publish_qos1_empty_topic_uses_the_alias",  # 5.0 section 3.3.2.3.4
         "32 08 00 00 00 05 03 23 00 07",
         Publish("", b"", 1, packet_id=5, properties={"topic_alias": 7})),
    Case("publish_from_server_with_topic_alias_and_subscription_identifier",
         "30 09 00 00 05 23 00 03 0B 02 7A",
         Publish("", b"z", properties={"topic_alias": 3, "subscription_identifier": [2]}),
         SERVER),
    Case("publish_payload_format_utf8", "30 08 00 01 74 02 01 01 C3 A9",
         Publish("t", "\u00e9".encode(), properties={"payload_format_indicator": 1})),
    Case("publish_two_byte_property_length",
         # correlation data of 125 bytes: property length 128 = 80 01, remaining 133 = 85 01
         "30 85 01 00 01 74 80 01 09 00 7D" + " 5A" * 125,
         Publish("t", b"", properties={"correlation_data": b"Z" * 125})),
    Case("publish_no_properties_from_the_server", "30 05 00 01 74 00 6F",
         Publish("t", b"o"), SERVER),
    # ---------------------------------------------------- PUBACK PUBREC PUBREL PUBCOMP
    # Remaining length 2: success, no properties; 3: a reason code, no properties
    # (5.0 sections 3.4.2.1, 3.5.2.1, 3.6.2.1, 3.7.2.1)
    Case("puback_short_form", "40 02 00 01", PubAck(1), SERVER),
    Case("pubrec_short_form", "50 02 00 02", PubRec(2), SERVER),
    Case("pubrel_short_form", "62 02 00 03", PubRel(3)),
    Case("pubcomp_short_form", "70 02 00 04", PubComp(4)),
    Case("puback_reason_only_no_matching_subscribers", "40 03 00 05 10",
         PubAck(5, ReasonCode.NO_MATCHING_SUBSCRIBERS), SERVER),
    Case("pubrec_reason_only_packet_identifier_in_use", "50 03 00 06 91",
         PubRec(6, ReasonCode.PACKET_IDENTIFIER_IN_USE)),
    Case("pubrel_reason_only_packet_identifier_not_found", "62 03 00 07 92",
         PubRel(7, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND), SERVER),
    Case("pubcomp_reason_only_packet_identifier_not_found", "70 03 00 08 92",
         PubComp(8, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND)),
    Case("puback_not_authorized_reason_string_and_user_property",
         f"40 14 00 07 87 10 1F 00 06 64 65 6E 69 65 64 {USER_AB}",
         PubAck(7, ReasonCode.NOT_AUTHORIZED, {"reason_string": "denied",
                                              "user_property": [("a", "b")]}), SERVER),
    Case("pubrec_quota_exceeded_reason_string_and_user_property",
         f"50 12 00 08 97 0E 1F 00 04 66 75 6C 6C {USER_AB}",
         PubRec(8, ReasonCode.QUOTA_EXCEEDED, {"reason_string": "full",
                                               "user_property": [("a", "b")]}), SERVER),
    Case("pubrec_payload_format_invalid", "50 03 00 0A 99",
         PubRec(10, ReasonCode.PAYLOAD_FORMAT_INVALID), SERVER),
    Case("pubrel_success_with_properties_is_not_short",
         f"62 0F 00 09 00 0B 1F 00 01 78 {USER_AB}",
         PubRel(9, ReasonCode.SUCCESS, {"reason_string": "x", "user_property": [("a", "b")]})),
    Case("pubcomp_not_found_reason_string_and_user_property",
         f"70 11 00 0A 92 0D 1F 00 03 6F 6C 64 {USER_AB}",
         PubComp(10, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND, {
             "reason_string": "old", "user_property": [("a", "b")]}), SERVER),
    # ------------------------------------------------------------------------ SUBSCRIBE
    Case("subscribe_every_subscription_option",
         # subscription identifier 128 (varint 80 01), user property; options: 0x00,
         # 0x05 QoS 1 + no local, 0x1A QoS 2 + retain as published + retain handling 1,
         # 0x20 retain handling 2, 0x09 QoS 1 + retain as published on a shared filter
         f"82 2E 00 0B 0A 0B 80 01 {USER_KV} 00 03 61 2F 23 00 00 03 62 2F 2B 05"
         f" 00 01 63 1A 00 01 64 20 00 0A {SHARE_G_E} 09",
         Subscribe(11, (("a/#", SubOptions(0)), ("b/+", SubOptions(1, True)),
                        ("c", SubOptions(2, False, True, 1)),
                        ("d", SubOptions(0, False, False, 2)),
                        ("$share/g/e", SubOptions(1, False, True))),
                   {"subscription_identifier": [128], "user_property": [("k", "v")]})),
    Case("suback_every_subscribe_reason_code_reason_string_user_property",
         f"90 1A 00 0B 0B 1F 00 01 72 {USER_AB} 00 01 02 80 83 87 8F 91 97 9E A1 A2",
         SubAck(11, (0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2),
                {"reason_string": "r", "user_property": [("a", "b")]}), SERVER),
    Case("unsubscribe_user_property_two_filters",
         f"A2 1B 00 0C 07 {USER_KV} 00 03 61 2F 23 00 0A {SHARE_G_E}",
         Unsubscribe(12, ("a/#", "$share/g/e"), {"user_property": [("k", "v")]})),
    Case("unsuback_every_unsubscribe_reason_code_reason_string_user_property",
         f"B0 15 00 0C 0B 1F 00 01 72 {USER_AB} 00 11 80 83 87 8F 91",
         UnsubAck(12, (0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91),
                  {"reason_string": "r", "user_property": [("a", "b")]}), SERVER),
    # ---------------------------------------------------------- PINGREQ PINGRESP
    Case("pingreq", "C0 00", PingReq()),
    Case("pingresp", "D0 00", PingResp(), SERVER),
    # ------------------------------------------------------------------------ DISCONNECT
    Case("disconnect_short_form", "E0 00", Disconnect()),  # 5.0 section 3.14.2.1
    Case("disconnect_from_client_session_expiry_reason_string_user_property",
         f"E0 14 00 12 11 00 00 00 3C 1F 00 03 62 79 65 {USER_AB}",
         Disconnect(ReasonCode.SUCCESS, {"session_expiry_interval": 60,
                                         "reason_string": "bye",
                                         "user_property": [("a", "b")]})),
    Case("disconnect_from_server_use_another_server", "E0 09 9C 07 1C 00 04 68 6F 73 74",
         Disconnect(ReasonCode.USE_ANOTHER_SERVER, {"server_reference": "host"}), SERVER),
    Case("disconnect_from_server_reason_only_topic_alias_invalid", "E0 01 94",
         Disconnect(ReasonCode.TOPIC_ALIAS_INVALID), SERVER),
    Case("disconnect_from_client_malformed_packet", "E0 01 81",
         Disconnect(ReasonCode.MALFORMED_PACKET)),
    # ------------------------------------------------------------------------------ AUTH
    Case("auth_from_client_reauthenticate_method_data_reason_string_user_property",
         f"F0 1A 19 18 15 00 05 {SCRAM} 16 00 02 AB CD 1F 00 01 72 {USER_AB}",
         Auth(ReasonCode.REAUTHENTICATE, {"authentication_method": "SCRAM",
                                          "authentication_data": b"\xab\xcd",
                                          "reason_string": "r",
                                          "user_property": [("a", "b")]})),
    Case("auth_from_server_continue", f"F0 0A 18 08 15 00 05 {SCRAM}",
         Auth(ReasonCode.CONTINUE_AUTHENTICATION, {"authentication_method": "SCRAM"}),
         SERVER),
    Case("auth_from_server_success_with_method", f"F0 0A 00 08 15 00 05 {SCRAM}",
         Auth(ReasonCode.SUCCESS, {"authentication_method": "SCRAM"}), SERVER),
    Case("auth_short_form", "F0 00", Auth(), SERVER),  # 5.0 section 3.15.2.1
]

# Longer forms the spec allows for what the encoder writes shorter: (name, as received,
# packet, the encoder's bytes, sender).
LONG_FORMS = [
    ("puback_success_spelled_out", "40 03 00 01 00", PubAck(1), "40 02 00 01", SERVER),
    ("pubrec_success_empty_property_length", "50 04 00 02 00 00", PubRec(2), "50 02 00 02",
     SERVER),
    ("pubrel_reason_with_empty_property_length", "62 04 00 03 92 00",
     PubRel(3, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND), "62 03 00 03 92", CLIENT),
    ("pubcomp_success_spelled_out", "70 03 00 04 00", PubComp(4), "70 02 00 04", CLIENT),
    ("disconnect_success_spelled_out", "E0 01 00", Disconnect(), "E0 00", CLIENT),
    ("disconnect_success_empty_property_length", "E0 02 00 00", Disconnect(), "E0 00", CLIENT),
    ("disconnect_with_will_empty_property_length", "E0 02 04 00",
     Disconnect(ReasonCode.DISCONNECT_WITH_WILL), "E0 01 04", CLIENT),
    ("connack_empty_property_length", "20 03 00 00 00", ConnAck(), "20 03 00 00 00", SERVER),
]

EVERY_V5_PACKET = {Connect, ConnAck, Publish, PubAck, PubRec, PubRel, PubComp, Subscribe,
                   SubAck, Unsubscribe, UnsubAck, PingReq, PingResp, Disconnect, Auth}


def decoder_for(sender: str) -> FrameDecoder:
    return FrameDecoder(server_side=sender == CLIENT, protocol_level=5)


def case_params(cases: list[Case]) -> list[Any]:
    return [pytest.param(c, id=c.name) for c in cases]


def _property_names(packet: Any) -> set[str]:
    names = set(getattr(packet, "properties", {}))
    will = getattr(packet, "will", None)
    return names | set(will.properties) if will is not None else names


def test_catalogue_has_every_v5_packet_and_every_property():
    assert {type(c.packet) for c in CASES} == EVERY_V5_PACKET
    assert set().union(*(_property_names(c.packet) for c in CASES)) == set(PROPERTY_IDS)
    assert len({c.name for c in CASES}) == len(CASES)


def test_catalogue_has_a_reason_string_and_a_user_property_on_every_packet_that_may_carry_them():
    carrying = {Connect: {"user_property"}, Publish: {"user_property"},
                Subscribe: {"user_property"}, Unsubscribe: {"user_property"}}
    for kind in EVERY_V5_PACKET - {PingReq, PingResp}:
        wanted = carrying.get(kind, {"reason_string", "user_property"})
        have = set().union(*(_property_names(c.packet) for c in CASES if type(c.packet) is kind))
        assert wanted <= have, kind.__name__


@pytest.mark.parametrize("case", case_params(CASES))
def test_v5_wire_case_decodes_fed_whole(case: Case):
    decoder = decoder_for(case.sender)
    decoder.feed(h(case.wire))
    assert drain(decoder) == [case.packet]
    assert decoder.buffered() == 0


@pytest.mark.parametrize("case", case_params(CASES))
def test_v5_wire_case_decodes_fed_one_byte_at_a_time(case: Case):
    decoder = decoder_for(case.sender)
    wire = h(case.wire)
    for i in range(len(wire) - 1):
        decoder.feed(wire[i:i + 1])
        assert decoder.next_packet() is None, f"a packet came out after {i + 1} bytes"
    decoder.feed(wire[-1:])
    assert drain(decoder) == [case.packet]


@pytest.mark.parametrize("case", case_params(CASES))
def test_v5_wire_case_encodes_to_the_spec_bytes(case: Case):
    assert encode(case.packet, 5).hex(" ") == h(case.wire).hex(" ")


@pytest.mark.parametrize("sender", [CLIENT, SERVER])
def test_v5_cases_of_one_sender_decode_as_one_stream_in_order(sender: str):
    cases = [c for c in CASES if c.sender == sender]
    stream = b"".join(h(c.wire) for c in cases)
    decoder = decoder_for(sender)
    decoder.feed(stream)
    assert drain(decoder) == [c.packet for c in cases]


@pytest.mark.parametrize(("wire", "packet", "short", "sender"),
                         [pytest.param(w, p, s, snd, id=n) for n, w, p, s, snd in LONG_FORMS])
def test_long_form_decodes_and_the_encoder_writes_the_short_form(wire: str, packet: Any,
                                                                  short: str, sender: str):
    decoder = decoder_for(sender)
    decoder.feed(h(wire))
    assert drain(decoder) == [packet]
    assert encode(packet, 5).hex(" ") == h(short).hex(" ")


def test_user_properties_keep_their_order_and_duplicates():
    # [MQTT-3.3.2-17] [MQTT-3.3.2-18]: forwarded unaltered and in order, the same name twice
    # included; the decoder hands them over as the list they came in.
    pairs = [("z", "1"), ("a", "2"), ("z", "3"), ("z", "1")]
    packet = Publish("t", b"", properties={"user_property": pairs})
    decoder = decoder_for(CLIENT)
    decoder.feed(encode(packet, 5))
    (got,) = drain(decoder)
    assert got.properties["user_property"] == pairs


def test_a_v3_connect_then_v5_bytes_are_not_read_as_v5():
    # The level is the CONNECT's: after a 3.1.1 CONNECT, a PUBACK with a reason code byte is
    # malformed (3.1.1 has none), exactly as before MQTT 5 existed in the codec.
    from broker.errors import MalformedPacket

    decoder = FrameDecoder()
    decoder.feed(h(f"10 0E {MQTT} 04 02 00 3C 00 02 63 31") + h("40 03 00 01 10"))
    assert decoder.next_packet() == Connect("c1", 4, True, 60)
    with pytest.raises(MalformedPacket):
        decoder.next_packet()

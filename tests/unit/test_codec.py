"""The codec against wire bytes written by hand from the MQTT 3.1.1 and 5.0 specifications.

One catalogue of named wire cases: each is decoded (fed whole and one byte at a time) and
encoded, and all of them together decode as one stream. The bytes were written from the spec,
not produced by `encode`, so a codec that drifts from the spec fails here. Then hypothesis:
arbitrary bytes give packets or `MQTTError`s only, and generated packets round-trip, split
anywhere. Malformed input has its own catalogue in `test_codec_malformed.py`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.wire import C1_CONNECT_BODY_TAIL, MQISDP, MQTT, drain, h, varint

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
from broker.codec.primitives import DISCOURAGED
from broker.errors import (
    MalformedPacket,
    PacketTooLarge,
    ProtocolError,
    ReasonCode,
    UnsupportedProtocolVersion,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROUND_TRIP = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Packets only a server sends: a client-side decoder reads them.
SERVER_SENT = (ConnAck, SubAck, UnsubAck, PingResp)


class Case(NamedTuple):
    name: str
    wire: str  # hex, spaces allowed
    packet: Any
    level: int


CASES: list[Case] = [
    # ---------------------------------------------------------------- MQTT 3.1.1 (level 4)
    Case("connect_minimal_clean_session",
         f"10 0E {MQTT} 04 02 00 3C 00 02 63 31",
         Connect("c1", 4, True, 60), 4),
    Case("connect_empty_client_id_keepalive_0",
         f"10 0C {MQTT} 04 02 00 00 00 00",
         Connect("", 4, True, 0), 4),
    Case("connect_will_qos1_retain_user_password",
         # flags: user 0x80 | password 0x40 | will retain 0x20 | will QoS 1 0x08 | will 0x04
         # | clean 0x02 (3.1.1 section 3.1.2.2 to 3.1.2.9)
         f"10 1F {MQTT} 04 EE 00 0A 00 02 69 64 00 03 77 2F 74 00 03 62 79 65"
         " 00 01 75 00 02 70 77",
         Connect("id", 4, True, 10, Will("w/t", b"bye", 1, True), "u", b"pw"), 4),
    Case("connect_persistent_will_qos2_empty_message_user_only_keepalive_max",
         f"10 18 {MQTT} 04 94 FF FF 00 01 78 00 01 74 00 00 00 04 75 73 65 72",
         Connect("x", 4, False, 65535, Will("t", b"", 2, False), "user"), 4),
    Case("connect_utf8_client_id",
         f"10 0E {MQTT} 04 02 00 3C 00 02 C3 BC",
         Connect("\u00fc", 4, True, 60), 4),
    Case("connack_accepted", "20 02 00 00", ConnAck(ReasonCode.SUCCESS, False), 4),
    Case("connack_session_present", "20 02 01 00", ConnAck(ReasonCode.SUCCESS, True), 4),
    Case("connack_refused_0x01_protocol_version", "20 02 00 01",
         ConnAck(ReasonCode.UNSUPPORTED_PROTOCOL_VERSION), 4),
    Case("connack_refused_0x02_identifier", "20 02 00 02",
         ConnAck(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID), 4),
    Case("connack_refused_0x03_server_unavailable", "20 02 00 03",
         ConnAck(ReasonCode.SERVER_UNAVAILABLE), 4),
    Case("connack_refused_0x04_bad_user_or_password", "20 02 00 04",
         ConnAck(ReasonCode.BAD_USER_NAME_OR_PASSWORD), 4),
    Case("connack_refused_0x05_not_authorized", "20 02 00 05",
         ConnAck(ReasonCode.NOT_AUTHORIZED), 4),
    Case("publish_qos0", "30 07 00 03 61 2F 62 68 69", Publish("a/b", b"hi"), 4),
    Case("publish_qos0_retain_empty_payload", "31 05 00 03 61 2F 62",
         Publish("a/b", b"", retain=True), 4),
    Case("publish_qos1", "32 08 00 03 61 2F 62 00 01 78",
         Publish("a/b", b"x", 1, packet_id=1), 4),
    Case("publish_qos1_dup", "3A 06 00 01 74 12 34 7A",
         Publish("t", b"z", 1, dup=True, packet_id=0x1234), 4),
    Case("publish_qos2_dup_retain_packet_id_ffff_binary_payload",
         "3D 07 00 01 74 FF FF 00 01",
         Publish("t", b"\x00\x01", 2, True, True, 0xFFFF), 4),
    Case("publish_dollar_topic_with_empty_levels", "30 0A 00 08 24 53 59 53 2F 2F 61 2F",
         Publish("$SYS//a/", b""), 4),
    Case("publish_two_byte_remaining_length", "30 CB 01 00 01 74" + " 41" * 200,
         Publish("t", b"A" * 200), 4),
    # 16,384 = 0x80 0x80 0x01: the first three-byte remaining length (3.1.1 section 2.2.3)
    Case("publish_three_byte_remaining_length", "30 80 80 01 00 01 74" + " 42" * 16381,
         Publish("t", b"B" * 16381), 4),
    Case("puback", "40 02 00 01", PubAck(1), 4),
    Case("pubrec", "50 02 12 34", PubRec(0x1234), 4),
    Case("pubrel_flags_0010", "62 02 00 02", PubRel(2), 4),  # [MQTT-3.6.1-1]
    Case("pubcomp", "70 02 FF FF", PubComp(0xFFFF), 4),
    Case("subscribe_one_filter_qos0", "82 06 00 01 00 01 61 00",
         Subscribe(1, (("a", SubOptions(0)),)), 4),  # [MQTT-3.8.1-1] flags 0010
    Case("subscribe_two_filters_wildcards", "82 0C 00 0A 00 03 61 2F 2B 01 00 01 23 02",
         Subscribe(10, (("a/+", SubOptions(1)), ("#", SubOptions(2)))), 4),
    Case("suback_one", "90 03 00 01 00", SubAck(1, (0,)), 4),
    Case("suback_granted_and_failure", "90 05 00 0A 01 02 80", SubAck(10, (1, 2, 0x80)), 4),
    Case("unsubscribe_one", "A2 05 00 01 00 01 61", Unsubscribe(1, ("a",)), 4),
    Case("unsubscribe_two", "A2 0A 00 02 00 03 61 2F 23 00 01 62",
         Unsubscribe(2, ("a/#", "b")), 4),
    Case("unsuback", "B0 02 00 01", UnsubAck(1), 4),
    Case("pingreq", "C0 00", PingReq(), 4),
    Case("pingresp", "D0 00", PingResp(), 4),
    Case("disconnect", "E0 00", Disconnect(), 4),
    # ---------------------------------------------------------------- MQTT 3.1 (level 3)
    Case("connect_mqisdp_minimal", f"10 10 {MQISDP} 03 02 00 3C 00 02 63 31",
         Connect("c1", 3, True, 60), 3),
    Case("connect_mqisdp_user_password_persistent",
         f"10 16 {MQISDP} 03 C0 00 1E 00 02 63 32 00 01 75 00 01 70",
         Connect("c2", 3, False, 30, None, "u", b"p"), 3),
    Case("connect_mqisdp_will_qos1", f"10 17 {MQISDP} 03 0E 00 3C 00 02 63 33 00 01 74 00 02 67 6F",
         Connect("c3", 3, True, 60, Will("t", b"go", 1)), 3),
    Case("connack_mqisdp_accepted", "20 02 00 00", ConnAck(ReasonCode.SUCCESS), 3),
    Case("publish_mqisdp_qos1", "32 06 00 01 74 00 07 21", Publish("t", b"!", 1, packet_id=7), 3),
    Case("subscribe_mqisdp", "82 06 00 05 00 01 61 01", Subscribe(5, (("a", SubOptions(1)),)), 3),
    Case("puback_mqisdp", "40 02 00 07", PubAck(7), 3),
    Case("pingreq_mqisdp", "C0 00", PingReq(), 3),
    # ---------------------------------------------------------------- MQTT 5.0 (level 5)
    Case("connect_v5_properties_with_user_property",
         # props (15 bytes): session expiry 0x11 = 120, receive maximum 0x21 = 10,
         # user property 0x26 ("k", "v")  (5.0 section 3.1.2.11)
         f"10 1E {MQTT} 05 02 00 3C 0F 11 00 00 00 78 21 00 0A 26 00 01 6B 00 01 76"
         " 00 02 63 35",
         Connect("c5", 5, True, 60, properties={
             "session_expiry_interval": 120, "receive_maximum": 10,
             "user_property": [("k", "v")]}), 5),
    Case("connect_v5_will_properties",
         f"10 1A {MQTT} 05 06 00 3C 00 00 01 77 05 18 00 00 00 05 00 01 74 00 01 78",
         Connect("w", 5, True, 60, Will("t", b"x", properties={"will_delay_interval": 5})), 5),
    Case("connect_v5_password_without_user_name_is_allowed",  # [MQTT-3.1.2-22] is 3.1.1 only
         f"10 11 {MQTT} 05 42 00 00 00 00 01 61 00 01 70",
         Connect("a", 5, True, 0, password=b"p"), 5),
    Case("connack_v5_no_properties", "20 03 00 00 00", ConnAck(ReasonCode.SUCCESS), 5),
    Case("connack_v5_properties",
         "20 0B 01 00 08 12 00 02 61 62 22 00 05",
         ConnAck(ReasonCode.SUCCESS, True, {"assigned_client_identifier": "ab",
                                            "topic_alias_maximum": 5}), 5),
    Case("connack_v5_refused_not_authorized", "20 03 00 87 00",
         ConnAck(ReasonCode.NOT_AUTHORIZED), 5),
    Case("publish_v5_no_properties", "30 05 00 01 74 00 68", Publish("t", b"h"), 5),
    Case("publish_v5_user_properties_and_subscription_identifiers",
         # expiry 0x02 = 30; user 0x26 ("a","1"), ("b","2"); subscription id 0x0B 7 and 300
         # (varint AC 02)
         "32 1F 00 01 61 00 05 18 02 00 00 00 1E 26 00 01 61 00 01 31 26 00 01 62 00 01 32"
         " 0B 07 0B AC 02 70",
         Publish("a", b"p", 1, packet_id=5, properties={
             "message_expiry_interval": 30,
             "user_property": [("a", "1"), ("b", "2")],
             "subscription_identifier": [7, 300]}), 5),
    Case("publish_v5_message_properties",
         "30 18 00 01 74 12 01 01 03 00 04 6A 73 6F 6E 08 00 01 72 09 00 02 01 02 7B 7D",
         Publish("t", b"{}", properties={
             "payload_format_indicator": 1, "content_type": "json", "response_topic": "r",
             "correlation_data": b"\x01\x02"}), 5),
    Case("publish_v5_empty_topic_with_topic_alias", "30 07 00 00 03 23 00 01 78",
         Publish("", b"x", properties={"topic_alias": 1}), 5),
    Case("puback_v5_success_short_form", "40 02 00 01", PubAck(1), 5),  # 5.0 section 3.4.2.1
    Case("puback_v5_reason_only", "40 03 00 01 10",
         PubAck(1, ReasonCode.NO_MATCHING_SUBSCRIBERS), 5),
    Case("pubrec_v5_reason_and_reason_string", "50 0A 00 02 80 06 1F 00 03 62 61 64",
         PubRec(2, ReasonCode.UNSPECIFIED_ERROR, {"reason_string": "bad"}), 5),
    Case("pubrel_v5_packet_id_not_found", "62 03 00 03 92",
         PubRel(3, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND), 5),
    Case("pubcomp_v5", "70 02 00 04", PubComp(4), 5),
    Case("subscribe_v5_options_and_subscription_identifier",
         # options 0x2D: QoS 1, no local 0x04, retain as published 0x08, retain handling 2
         "82 09 00 01 02 0B 05 00 01 61 2D",
         Subscribe(1, (("a", SubOptions(1, True, True, 2)),),
                   {"subscription_identifier": [5]}), 5),
    Case("suback_v5_reason_codes", "90 06 00 01 00 00 01 8F",
         SubAck(1, (0, 1, ReasonCode.TOPIC_FILTER_INVALID)), 5),
    Case("unsubscribe_v5", "A2 06 00 01 00 00 01 61", Unsubscribe(1, ("a",)), 5),
    Case("unsuback_v5_reason_codes", "B0 05 00 01 00 00 11",
         UnsubAck(1, (0, ReasonCode.NO_SUBSCRIPTION_EXISTED)), 5),
    Case("disconnect_v5_short_form", "E0 00", Disconnect(), 5),  # 5.0 section 3.14.2.1
    Case("disconnect_v5_with_will", "E0 01 04", Disconnect(ReasonCode.DISCONNECT_WITH_WILL), 5),
    Case("disconnect_v5_reason_and_properties", "E0 0A 8E 08 1F 00 05 74 61 6B 65 6E",
         Disconnect(ReasonCode.SESSION_TAKEN_OVER, {"reason_string": "taken"}), 5),
    Case("disconnect_v5_success_with_session_expiry", "E0 07 00 05 11 00 00 00 00",
         Disconnect(ReasonCode.SUCCESS, {"session_expiry_interval": 0}), 5),
    Case("auth_v5_continue", "F0 0A 18 08 15 00 01 58 16 00 01 01",
         Auth(ReasonCode.CONTINUE_AUTHENTICATION, {"authentication_method": "X",
                                                   "authentication_data": b"\x01"}), 5),
    Case("pingreq_v5", "C0 00", PingReq(), 5),
]


def server_sent(packet: Any) -> bool:
    """Whether only a server may send `packet`: a client-side decoder reads it. A PUBLISH with
    subscription identifiers is one [MQTT-3.3.4-6]."""
    return isinstance(packet, SERVER_SENT) or (
        isinstance(packet, Publish) and "subscription_identifier" in packet.properties)


def decoder_for(packet: Any, level: int) -> FrameDecoder:
    return FrameDecoder(server_side=not server_sent(packet), protocol_level=level)


def case_params(cases: list[Case]) -> list[Any]:
    return [pytest.param(c, id=c.name) for c in cases]


def test_catalogue_covers_every_packet_type_at_levels_3_4_and_5():
    kinds = {(type(c.packet), c.level) for c in CASES}
    every = {Connect, ConnAck, Publish, PubAck, PubRec, PubRel, PubComp, Subscribe, SubAck,
             Unsubscribe, UnsubAck, PingReq, PingResp, Disconnect}
    assert {t for t, level in kinds if level == 4} == every
    assert {t for t, level in kinds if level == 5} == every - {PingResp} | {Auth}
    assert (Connect, 3) in kinds
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", case_params(CASES))
def test_wire_case_decodes_fed_whole(case: Case):
    decoder = decoder_for(case.packet, case.level)
    decoder.feed(h(case.wire))
    assert drain(decoder) == [case.packet]
    assert decoder.buffered() == 0


@pytest.mark.parametrize("case", case_params(CASES))
def test_wire_case_decodes_fed_one_byte_at_a_time(case: Case):
    decoder = decoder_for(case.packet, case.level)
    wire = h(case.wire)
    for i in range(len(wire) - 1):
        decoder.feed(wire[i:i + 1])
        assert decoder.next_packet() is None, f"a packet came out after {i + 1} bytes"
    decoder.feed(wire[-1:])
    assert drain(decoder) == [case.packet]
    assert decoder.buffered() == 0


@pytest.mark.parametrize("case", case_params(CASES))
def test_wire_case_encodes_to_the_spec_bytes(case: Case):
    assert encode(case.packet, case.level).hex(" ") == h(case.wire).hex(" ")


def _groups() -> dict[tuple[bool, int], list[Case]]:
    groups: dict[tuple[bool, int], list[Case]] = {}
    for case in CASES:
        groups.setdefault((not server_sent(case.packet), case.level), []).append(case)
    return groups


@pytest.mark.parametrize(("server_side", "level"), sorted(_groups()))
def test_all_cases_concatenated_decode_in_order(server_side: bool, level: int):
    cases = _groups()[(server_side, level)]
    stream = b"".join(h(c.wire) for c in cases)
    whole = FrameDecoder(server_side=server_side, protocol_level=level)
    whole.feed(stream)
    assert drain(whole) == [c.packet for c in cases]

    bytewise = FrameDecoder(server_side=server_side, protocol_level=level)
    got = []
    for i in range(len(stream)):
        bytewise.feed(stream[i:i + 1])
        got.extend(drain(bytewise))
    assert got == [c.packet for c in cases]
    assert bytewise.buffered() == 0


# Packets carrying what their level cannot say: encode drops it (no round trip here).
ENCODE_ONLY = [
    ("connack_refused_never_says_session_present [MQTT-3.2.2-4]",
     ConnAck(ReasonCode.NOT_AUTHORIZED, True), 4, "20 02 00 05"),
    ("connack_v5_refused_never_says_session_present [MQTT-3.2.2-6]",
     ConnAck(ReasonCode.NOT_AUTHORIZED, True), 5, "20 03 00 87 00"),
    ("connack_reason_without_a_v3_code_is_server_unavailable",
     ConnAck(ReasonCode.QUOTA_EXCEEDED), 4, "20 02 00 03"),
    ("puback_level_4_has_no_reason_code", PubAck(1, ReasonCode.NO_MATCHING_SUBSCRIBERS), 4,
     "40 02 00 01"),
    ("pubrec_level_4_has_no_properties", PubRec(2, 0x80, {"reason_string": "x"}), 4,
     "50 02 00 02"),
    ("disconnect_level_4_has_no_reason_code", Disconnect(ReasonCode.SESSION_TAKEN_OVER), 4,
     "E0 00"),
    ("publish_level_4_has_no_properties", Publish("t", b"x", properties={"topic_alias": 1}), 4,
     "30 04 00 01 74 78"),
]


@pytest.mark.parametrize(("packet", "level", "wire"),
                         [pytest.param(p, lv, w, id=n) for n, p, lv, w in ENCODE_ONLY])
def test_encode_leaves_out_what_the_level_cannot_say(packet: Any, level: int, wire: str):
    assert encode(packet, level).hex(" ") == h(wire).hex(" ")


def test_connect_switches_the_decoder_to_its_level_for_the_packets_behind_it():
    # A v5 CONNECT then a v5 PUBACK with a reason code in the same read: the PUBACK must be
    # read with v5 rules (at level 4 its third byte would be malformed).
    decoder = FrameDecoder()
    decoder.feed(h(f"10 0E {MQTT} 05 02 00 3C 00 00 01 61") + h("40 03 00 01 10"))
    assert drain(decoder) == [Connect("a", 5, True, 60),
                              PubAck(1, ReasonCode.NO_MATCHING_SUBSCRIBERS)]
    assert decoder.protocol_level == 5


# ------------------------------------------------------------------------------ hypothesis

def _frames() -> st.SearchStrategy[bytes]:
    """A first byte and a correct remaining length around a random body, so that the random
    bytes reach the packet decoders instead of dying in the fixed header."""
    return st.builds(lambda first, body: bytes((first,)) + varint(len(body)) + body,
                     st.integers(0, 255), st.binary(max_size=64))


_CONNECT_PREFIXES = [h(f"10 0E {MQTT} 04 02 {C1_CONNECT_BODY_TAIL}"),
                     h(f"10 0E {MQTT} 05 02 00 3C 00 00 01 61")]

fuzz_input = st.one_of(
    st.binary(max_size=200),
    st.lists(_frames(), max_size=6).map(b"".join),
    st.tuples(st.sampled_from(_CONNECT_PREFIXES), st.lists(_frames(), max_size=6))
    .map(lambda t: t[0] + b"".join(t[1])),
)


@FUZZ
@given(data=fuzz_input, server_side=st.booleans(), level=st.sampled_from([3, 4, 5]),
       chunk=st.integers(1, 17))
def test_arbitrary_bytes_give_packets_or_mqtt_errors_only(data: bytes, server_side: bool,
                                                          level: int, chunk: int):
    decoder = FrameDecoder(server_side=server_side, protocol_level=level, max_packet_size=4096)
    try:
        for start in range(0, len(data), chunk):
            decoder.feed(data[start:start + chunk])
            while decoder.next_packet() is not None:
                pass
    except (MalformedPacket, ProtocolError, PacketTooLarge, UnsupportedProtocolVersion):
        pass


# Text a topic level may hold: valid UTF-8 without wildcards, separators, U+0000, control
# characters or non-characters (all refused by the decoder, spec 1.5.3).
topic_levels = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs"),
                                     exclude_characters="+#/\ufffe\uffff"), max_size=6
                       ).filter(lambda text: not DISCOURAGED.search(text))
topic_names = st.lists(topic_levels, min_size=1, max_size=4).map("/".join).filter(bool)
filter_levels = st.one_of(topic_levels, st.just("+"))
topic_filters = st.builds(
    lambda levels, tail: "/".join([*levels, *tail]),
    st.lists(filter_levels, min_size=1, max_size=4), st.sampled_from([[], ["#"]]),
).filter(bool)
packet_ids = st.integers(1, 0xFFFF)


@st.composite
def publishes(draw: st.DrawFn) -> Publish:
    qos = draw(st.integers(0, 2))
    return Publish(draw(topic_names), draw(st.binary(max_size=300)), qos, draw(st.booleans()),
                   draw(st.booleans()) if qos else False, draw(packet_ids) if qos else 0)


user_properties = st.lists(st.tuples(topic_levels, topic_levels), min_size=1, max_size=3)


@st.composite
def v5_publishes(draw: st.DrawFn) -> Publish:
    packet = draw(publishes())
    props = {}
    if draw(st.booleans()):
        props["user_property"] = draw(user_properties)
    if draw(st.booleans()):
        props["subscription_identifier"] = draw(st.lists(st.integers(1, 268_435_455),
                                                         min_size=1, max_size=3))
    if draw(st.booleans()):
        props["message_expiry_interval"] = draw(st.integers(0, 0xFFFFFFFF))
    return Publish(packet.topic, packet.payload, packet.qos, packet.retain, packet.dup,
                   packet.packet_id, props)


sub_options_v4 = st.integers(0, 2).map(SubOptions)
sub_options_v5 = st.builds(SubOptions, st.integers(0, 2), st.booleans(), st.booleans(),
                           st.integers(0, 2))
acks = st.builds(lambda cls, pid: cls(pid), st.sampled_from([PubAck, PubRec, PubRel, PubComp]),
                 packet_ids)
v4_packets = st.one_of(
    publishes(), acks,
    st.builds(Subscribe, packet_ids,
              st.lists(st.tuples(topic_filters, sub_options_v4), min_size=1, max_size=4)
              .map(tuple)),
    st.builds(Unsubscribe, packet_ids, st.lists(topic_filters, min_size=1, max_size=4).map(tuple)),
    st.builds(SubAck, packet_ids, st.lists(st.sampled_from([0, 1, 2, 0x80]), min_size=1,
                                           max_size=4).map(tuple)),
    st.builds(UnsubAck, packet_ids),
    st.just(PingReq()), st.just(PingResp()), st.just(Disconnect()),
)
v5_packets = st.one_of(
    v5_publishes(),
    st.builds(lambda cls, pid, reason: cls(pid, reason),
              st.sampled_from([PubAck, PubRec]), packet_ids,
              st.sampled_from([0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99])),
    st.builds(lambda cls, pid, reason: cls(pid, reason),
              st.sampled_from([PubRel, PubComp]), packet_ids, st.sampled_from([0x00, 0x92])),
    st.builds(Subscribe, packet_ids,
              st.lists(st.tuples(topic_filters, sub_options_v5), min_size=1, max_size=4)
              .map(tuple)),
    st.builds(Disconnect, st.sampled_from([0x00, 0x04, 0x80, 0x8E]),
              st.one_of(st.just({}), st.builds(lambda up: {"user_property": up},
                                               user_properties))),
)


def _round_trip(packets: list[Any], level: int, cuts: list[int]) -> None:
    for packet in packets:
        wire = encode(packet, level)
        decoder = FrameDecoder(server_side=not server_sent(packet), protocol_level=level)
        points = sorted({c % (len(wire) + 1) for c in cuts})
        got = []
        for a, b in zip([0, *points], [*points, len(wire)], strict=True):
            decoder.feed(wire[a:b])
            got.extend(drain(decoder))
        assert got == [packet]
        assert decoder.buffered() == 0


@ROUND_TRIP
@given(packets=st.lists(v4_packets, min_size=1, max_size=3), level=st.sampled_from([3, 4]),
       cuts=st.lists(st.integers(0, 10_000), max_size=4))
def test_generated_v3_packets_round_trip_split_anywhere(packets: list[Any], level: int,
                                                       cuts: list[int]):
    _round_trip(packets, level, cuts)


@ROUND_TRIP
@given(packets=st.lists(v5_packets, min_size=1, max_size=3),
       cuts=st.lists(st.integers(0, 10_000), max_size=4))
def test_generated_v5_packets_round_trip_split_anywhere(packets: list[Any], cuts: list[int]):
    _round_trip(packets, 5, cuts)


@ROUND_TRIP
@given(packets=st.lists(publishes(), min_size=1, max_size=8), cut=st.integers(0, 10_000))
def test_generated_publishes_decode_as_one_stream(packets: list[Publish], cut: int):
    stream = b"".join(encode(p, 4) for p in packets)
    cut %= len(stream) + 1
    decoder = FrameDecoder(server_side=False)
    decoder.feed(stream[:cut])
    got = drain(decoder)
    decoder.feed(stream[cut:])
    got.extend(drain(decoder))
    assert got == packets

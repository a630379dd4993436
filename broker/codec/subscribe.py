"""SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, decode and encode side by side.

Rules: a non-zero packet id [MQTT-2.3.1-1]. In 3.x: at least one filter [MQTT-3.8.3-3]
[MQTT-3.10.3-2], the upper six bits of the requested QoS byte are reserved [MQTT-3.8.3-4], and
QoS 3 is malformed, as is everything 3.x calls a violation. In 5 the subscription options byte
is QoS (bits 0-1), no local (2), retain as published (3) and retain handling (4-5): bits 6-7
set is malformed [MQTT-3.8.3-5]; QoS 3, retain handling 3, no local on a shared subscription
[MQTT-3.8.3-4] and a SUBSCRIBE or UNSUBSCRIBE without filters [MQTT-3.8.3-2] are protocol
errors; a SUBSCRIBE carries at most one subscription identifier (`properties.py`); SUBACK and
UNSUBACK carry one reason code per filter, each one of their packet's codes (`reasons.py`).
Whether a filter is well formed is checked by the protocol with `topics`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import MalformedPacket, ProtocolError
from ..topics import SHARE_PREFIX
from .primitives import Reader, encode_u16, encode_utf8, fixed_header
from .properties import NO_PROPERTIES, decode_properties, encode_properties
from .reasons import check_reason

SUBSCRIBE = 8
SUBACK = 9
UNSUBSCRIBE = 10
UNSUBACK = 11


@dataclass(frozen=True, slots=True)
class SubOptions:
    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0

    def to_byte(self) -> int:
        return (self.qos | (0x04 if self.no_local else 0)
                | (0x08 if self.retain_as_published else 0) | (self.retain_handling << 4))

    @classmethod
    def from_byte(cls, byte: int, level: int) -> SubOptions:
        qos = byte & 0x03
        if level < 5:
            if qos == 3:
                raise MalformedPacket("SUBSCRIBE: requested QoS 3 [MQTT-3.8.3-4]")
            if byte & 0xFC:
                raise MalformedPacket(
                    "SUBSCRIBE: reserved bits of requested QoS set [MQTT-3.8.3-4]")
            return _QOS_ONLY[qos]
        if byte & 0xC0:
            raise MalformedPacket("SUBSCRIBE: reserved subscription option bits set [MQTT-3.8.3-5]")
        if qos == 3:
            raise ProtocolError("SUBSCRIBE: maximum QoS 3 (5.0 section 3.8.3.1)")
        retain_handling = (byte >> 4) & 0x03
        if retain_handling == 3:
            raise ProtocolError("SUBSCRIBE: retain handling 3 (5.0 section 3.8.3.1)")
        return cls(qos, bool(byte & 0x04), bool(byte & 0x08), retain_handling)


_QOS_ONLY = (SubOptions(0), SubOptions(1), SubOptions(2))


@dataclass(frozen=True, slots=True)
class Subscribe:
    PACKET_TYPE: ClassVar[int] = SUBSCRIBE
    packet_id: int
    subscriptions: tuple[tuple[str, SubOptions], ...]
    properties: Mapping[str, Any] = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class SubAck:
    PACKET_TYPE: ClassVar[int] = SUBACK
    packet_id: int
    reason_codes: tuple[int, ...]
    properties: Mapping[str, Any] = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    PACKET_TYPE: ClassVar[int] = UNSUBSCRIBE
    packet_id: int
    filters: tuple[str, ...]
    properties: Mapping[str, Any] = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class UnsubAck:
    PACKET_TYPE: ClassVar[int] = UNSUBACK
    packet_id: int
    reason_codes: tuple[int, ...] = ()
    properties: Mapping[str, Any] = NO_PROPERTIES


def _packet_id(reader: Reader, name: str) -> int:
    packet_id = reader.u16("packet identifier")
    if not packet_id:
        raise MalformedPacket(f"{name}: packet identifier 0 [MQTT-2.3.1-1]")
    return packet_id


def decode_subscribe(flags: int, reader: Reader, level: int) -> Subscribe:
    packet_id = _packet_id(reader, "SUBSCRIBE")
    props = decode_properties(reader, "SUBSCRIBE") if level >= 5 else NO_PROPERTIES
    subs = []
    while not reader.at_end():
        topic_filter = reader.utf8("topic filter")
        options = SubOptions.from_byte(reader.u8("subscription options"), level)
        if options.no_local and topic_filter.startswith(SHARE_PREFIX):
            raise ProtocolError(f"SUBSCRIBE: no local on shared subscription {topic_filter!r} "
                                "[MQTT-3.8.3-4]")
        subs.append((topic_filter, options))
    if not subs:
        if level >= 5:
            raise ProtocolError("SUBSCRIBE: no topic filter [MQTT-3.8.3-2]")
        raise MalformedPacket("SUBSCRIBE: no topic filter [MQTT-3.8.3-3]")
    return Subscribe(packet_id, tuple(subs), props)


def encode_subscribe(packet: Subscribe, level: int) -> bytes:
    body = bytearray(encode_u16(packet.packet_id))
    if level >= 5:
        body += encode_properties(packet.properties, "SUBSCRIBE")
    for topic_filter, options in packet.subscriptions:
        body += encode_utf8(topic_filter) + bytes((options.to_byte(),))
    return fixed_header(0x82, len(body)) + bytes(body)


def decode_suback(flags: int, reader: Reader, level: int) -> SubAck:
    packet_id = _packet_id(reader, "SUBACK")
    props = decode_properties(reader, "SUBACK") if level >= 5 else NO_PROPERTIES
    codes = tuple(reader.data[reader.pos:reader.end])
    reader.pos = reader.end
    if not codes:
        raise MalformedPacket("SUBACK: no return codes")
    if level >= 5:
        for code in codes:
            check_reason("SUBACK", code)  # [MQTT-3.9.3-2]
    return SubAck(packet_id, codes, props)


def encode_suback(packet: SubAck, level: int) -> bytes:
    body = encode_u16(packet.packet_id)
    if level >= 5:
        body += encode_properties(packet.properties, "SUBACK")
    body += bytes(packet.reason_codes)
    return fixed_header(0x90, len(body)) + body


def decode_unsubscribe(flags: int, reader: Reader, level: int) -> Unsubscribe:
    packet_id = _packet_id(reader, "UNSUBSCRIBE")
    props = decode_properties(reader, "UNSUBSCRIBE") if level >= 5 else NO_PROPERTIES
    filters = []
    while not reader.at_end():
        filters.append(reader.utf8("topic filter"))
    if not filters:
        if level >= 5:
            raise ProtocolError("UNSUBSCRIBE: no topic filter [MQTT-3.10.3-2]")
        raise MalformedPacket("UNSUBSCRIBE: no topic filter [MQTT-3.10.3-2]")
    return Unsubscribe(packet_id, tuple(filters), props)


def encode_unsubscribe(packet: Unsubscribe, level: int) -> bytes:
    body = bytearray(encode_u16(packet.packet_id))
    if level >= 5:
        body += encode_properties(packet.properties, "UNSUBSCRIBE")
    for topic_filter in packet.filters:
        body += encode_utf8(topic_filter)
    return fixed_header(0xA2, len(body)) + bytes(body)


def decode_unsuback(flags: int, reader: Reader, level: int) -> UnsubAck:
    packet_id = _packet_id(reader, "UNSUBACK")
    if level < 5:
        if not reader.at_end():
            raise MalformedPacket("UNSUBACK: unexpected bytes after the packet identifier")
        return UnsubAck(packet_id)
    props = decode_properties(reader, "UNSUBACK")
    codes = tuple(reader.data[reader.pos:reader.end])
    reader.pos = reader.end
    if not codes:  # one per filter, and an UNSUBSCRIBE has at least one [MQTT-3.10.3-2]
        raise MalformedPacket("UNSUBACK: no reason codes")
    for code in codes:
        check_reason("UNSUBACK", code)  # [MQTT-3.11.3-2]
    return UnsubAck(packet_id, codes, props)


def encode_unsuback(packet: UnsubAck, level: int) -> bytes:
    body = encode_u16(packet.packet_id)
    if level >= 5:
        body += encode_properties(packet.properties, "UNSUBACK") + bytes(packet.reason_codes)
    return fixed_header(0xB0, len(body)) + body

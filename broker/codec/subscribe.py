"""SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, decode and encode side by side.

Rules: a non-zero packet id [MQTT-2.3.1-1]; at least one filter [MQTT-3.8.3-3]
[MQTT-3.10.3-2]; in 3.x the upper six bits of the requested QoS byte are reserved
[MQTT-3.8.3-4]; QoS 3 is malformed; in 5 retain handling 3 and bits 6-7 are errors
[MQTT-3.8.3-5]. Whether a filter is well formed is checked by the protocol with `topics`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import MalformedPacket, ProtocolError
from .primitives import Reader, encode_u16, encode_utf8, fixed_header
from .properties import NO_PROPERTIES, decode_properties, encode_properties

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
        if qos == 3:
            raise MalformedPacket("SUBSCRIBE: requested QoS 3 [MQTT-3.8.3-4]")
        if level < 5:
            if byte & 0xFC:
                raise MalformedPacket(
                    "SUBSCRIBE: reserved bits of requested QoS set [MQTT-3.8.3-4]")
            return _QOS_ONLY[qos]
        if byte & 0xC0:
            raise MalformedPacket("SUBSCRIBE: reserved subscription option bits set [MQTT-3.8.3-5]")
        retain_handling = (byte >> 4) & 0x03
        if retain_handling == 3:
            raise ProtocolError("SUBSCRIBE: retain handling 3 [MQTT-3.8.3-5]")
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
        subs.append((topic_filter, SubOptions.from_byte(reader.u8("subscription options"), level)))
    if not subs:
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
    return UnsubAck(packet_id, codes, props)


def encode_unsuback(packet: UnsubAck, level: int) -> bytes:
    body = encode_u16(packet.packet_id)
    if level >= 5:
        body += encode_properties(packet.properties, "UNSUBACK") + bytes(packet.reason_codes)
    return fixed_header(0xB0, len(body)) + body

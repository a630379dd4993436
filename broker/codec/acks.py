"""PUBACK, PUBREC, PUBREL, PUBCOMP: one shape, four packet types, decode and encode together.

In 3.x the body is exactly a non-zero packet id [MQTT-2.3.1-1]. In 5 a reason code and
properties may follow: a body of two bytes means success and no properties, three bytes a
reason code and no properties (5.0 section 3.4.2.1), and the reason code must be one of its
packet's (`reasons.py`). The encoder writes the short form whenever it can. PUBREL carries the
fixed-header flags 0b0010 [MQTT-3.6.1-1], which the frame decoder checks with the others.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import MalformedPacket, ReasonCode
from .primitives import Reader, encode_u16, fixed_header
from .properties import NO_PROPERTIES, decode_properties, encode_properties
from .reasons import check_reason

PUBACK = 4
PUBREC = 5
PUBREL = 6
PUBCOMP = 7


@dataclass(frozen=True, slots=True)
class PubAck:
    PACKET_TYPE: ClassVar[int] = PUBACK
    packet_id: int
    reason_code: int = ReasonCode.SUCCESS
    properties: Mapping[str, Any] = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class PubRec:
    PACKET_TYPE: ClassVar[int] = PUBREC
    packet_id: int
    reason_code: int = ReasonCode.SUCCESS
    properties: Mapping[str, Any] = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class PubRel:
    PACKET_TYPE: ClassVar[int] = PUBREL
    packet_id: int
    reason_code: int = ReasonCode.SUCCESS
    properties: Mapping[str, Any] = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class PubComp:
    PACKET_TYPE: ClassVar[int] = PUBCOMP
    packet_id: int
    reason_code: int = ReasonCode.SUCCESS
    properties: Mapping[str, Any] = NO_PROPERTIES


AckPacket = PubAck | PubRec | PubRel | PubComp
ACK_CLASSES: dict[int, type[AckPacket]] = {PUBACK: PubAck, PUBREC: PubRec, PUBREL: PubRel,
                                             PUBCOMP: PubComp}
_NAMES = {PUBACK: "PUBACK", PUBREC: "PUBREC", PUBREL: "PUBREL", PUBCOMP: "PUBCOMP"}
_FIRST_BYTE = {PUBACK: 0x40, PUBREC: 0x50, PUBREL: 0x62, PUBCOMP: 0x70}


def _decoder(packet_type: int) -> Callable[[int, Reader, int], AckPacket]:
    cls = ACK_CLASSES[packet_type]
    name = _NAMES[packet_type]

    def decode(flags: int, reader: Reader, level: int) -> AckPacket:
        packet_id = reader.u16("packet identifier")
        if not packet_id:
            raise MalformedPacket(f"{name}: packet identifier 0 [MQTT-2.3.1-1]")
        reason: int
        if level >= 5 and not reader.at_end():  # the short form (success) is the 3.x one
            reason = reader.u8("reason code")
            check_reason(name, reason)  # [MQTT-3.4.2-1] and its kin
            props = decode_properties(reader, name) if not reader.at_end() else NO_PROPERTIES
        else:
            reason, props = ReasonCode.SUCCESS, NO_PROPERTIES
        if not reader.at_end():
            raise MalformedPacket(f"{name}: {reader.remaining()} unexpected bytes")
        return cls(packet_id, reason, props)

    return decode


decode_puback = _decoder(PUBACK)
decode_pubrec = _decoder(PUBREC)
decode_pubrel = _decoder(PUBREL)
decode_pubcomp = _decoder(PUBCOMP)

def _success_encoder(packet_type: int) -> Callable[[int], bytes]:
    prefix = bytes((_FIRST_BYTE[packet_type], 2))

    def encode_success(packet_id: int) -> bytes:
        return prefix + packet_id.to_bytes(2, "big")

    return encode_success


# The common case as four bytes, without building a packet: a success ack is the same at
# every level (5.0 leaves out a success reason code with no properties), and the protocol
# sends one per QoS 1/2 publish. One encoder per type, so the hot path passes no type.
ENCODE_SUCCESS = {packet_type: _success_encoder(packet_type) for packet_type in ACK_CLASSES}
encode_puback_success = ENCODE_SUCCESS[PUBACK]
encode_pubrec_success = ENCODE_SUCCESS[PUBREC]
encode_pubrel_success = ENCODE_SUCCESS[PUBREL]
encode_pubcomp_success = ENCODE_SUCCESS[PUBCOMP]


def encode_ack(packet: AckPacket, level: int) -> bytes:
    packet_type = packet.PACKET_TYPE
    if level < 5 or (packet.reason_code == ReasonCode.SUCCESS and not packet.properties):
        return ENCODE_SUCCESS[packet_type](packet.packet_id)
    body = encode_u16(packet.packet_id) + bytes((packet.reason_code,))
    if packet.properties:
        body += encode_properties(packet.properties, _NAMES[packet_type])
    return fixed_header(_FIRST_BYTE[packet_type], len(body)) + body

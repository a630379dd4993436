"""CONNECT and CONNACK, decode and encode side by side (3.1 "MQIsdp" level 3, 3.1.1, 5).

Rules enforced here: the protocol name/level pair [MQTT-3.1.2-1] [MQTT-3.1.2-2], the reserved
connect flag [MQTT-3.1.2-3], will flags only with a will [MQTT-3.1.2-11] [MQTT-3.1.2-13]
[MQTT-3.1.2-15], will QoS 3 [MQTT-3.1.2-14], a password only with a user name in 3.x
[MQTT-3.1.2-22], a will topic that is a valid topic name (`topics.validate_topic_name`), and
no bytes after the payload. In 5 the CONNECT and will properties are checked as they are read
(`properties.py`: a will property set is its own table, so a topic alias or subscription
identifier there is malformed), and a CONNACK's reason code must be a CONNACK code, with
session present 0 when it refuses. Whether a client id is acceptable is the protocol's
decision, not the codec's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import (
    CONNACK_V3_FROM_REASON,
    REASON_FROM_CONNACK_V3,
    ConnAckCodeV3,
    MalformedPacket,
    ProtocolError,
    ReasonCode,
    UnsupportedProtocolVersion,
)
from ..topics import validate_topic_name
from .primitives import Reader, encode_binary, encode_u16, encode_utf8, fixed_header
from .properties import NO_PROPERTIES, decode_properties, encode_properties
from .reasons import check_reason

CONNECT = 1
CONNACK = 2

MQTT_3_1 = 3
MQTT_3_1_1 = 4
MQTT_5 = 5
# The (protocol name, level) pairs that exist; anything else is answered with CONNACK 0x01.
PROTOCOL_NAMES = {MQTT_3_1: "MQIsdp", MQTT_3_1_1: "MQTT", MQTT_5: "MQTT"}


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Mapping[str, Any] = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Connect:
    PACKET_TYPE: ClassVar[int] = CONNECT
    client_id: str
    protocol_level: int = MQTT_3_1_1
    clean_start: bool = True
    keepalive: int = 60
    will: Will | None = None
    username: str | None = None
    password: bytes | None = None
    properties: Mapping[str, Any] = NO_PROPERTIES
    # Mosquitto's bridge bit (`try_private`): the level's top bit, 3.1 and 3.1.1 only. The
    # sender is a broker bridging to this one, which must not echo its messages back to it.
    bridge: bool = False


@dataclass(frozen=True, slots=True)
class ConnAck:
    PACKET_TYPE: ClassVar[int] = CONNACK
    reason_code: int = ReasonCode.SUCCESS
    session_present: bool = False
    properties: Mapping[str, Any] = NO_PROPERTIES


def decode_connect(flags: int, reader: Reader, level: int) -> Connect:
    name = reader.utf8("protocol name")
    protocol_level = reader.u8("protocol level")
    bridge = protocol_level & 0x80 and (protocol_level & 0x7F) in (MQTT_3_1, MQTT_3_1_1)
    if bridge:
        protocol_level &= 0x7F
    if PROTOCOL_NAMES.get(protocol_level) != name:
        if name not in ("MQTT", "MQIsdp"):
            raise MalformedPacket(f"CONNECT: unknown protocol name {name!r} [MQTT-3.1.2-1]")
        raise UnsupportedProtocolVersion(
            f"CONNECT: unsupported protocol {name!r} level {protocol_level} [MQTT-3.1.2-2]")
    connect_flags = reader.u8("connect flags")
    if connect_flags & 0x01:
        raise MalformedPacket("CONNECT: reserved connect flag is set [MQTT-3.1.2-3]")
    clean_start = bool(connect_flags & 0x02)
    has_will = bool(connect_flags & 0x04)
    will_qos = (connect_flags >> 3) & 0x03
    will_retain = bool(connect_flags & 0x20)
    has_password = bool(connect_flags & 0x40)
    has_username = bool(connect_flags & 0x80)
    if not has_will and (will_qos or will_retain):  # [MQTT-3.1.2-13] [MQTT-3.1.2-15]
        raise MalformedPacket("CONNECT: will QoS/retain set without a will [MQTT-3.1.2-11]")
    if will_qos == 3:
        raise MalformedPacket("CONNECT: will QoS 3 [MQTT-3.1.2-14]")
    if has_password and not has_username and protocol_level < MQTT_5:
        raise MalformedPacket("CONNECT: password flag without user name flag [MQTT-3.1.2-22]")
    keepalive = reader.u16("keep alive")
    v5 = protocol_level >= MQTT_5
    properties = decode_properties(reader, "CONNECT") if v5 else NO_PROPERTIES
    client_id = reader.utf8("client identifier")
    will = None
    if has_will:
        will_props = decode_properties(reader, "WILL") if v5 else NO_PROPERTIES
        will_topic = reader.utf8("will topic")
        # A will topic is a topic name like any other [MQTT-4.7.1-1] [MQTT-4.7.3-1].
        validate_topic_name(will_topic, "CONNECT: invalid will topic: ")
        will_payload = reader.binary("will message")
        will = Will(will_topic, will_payload, will_qos, will_retain, will_props)
    username = reader.utf8("user name") if has_username else None
    password = reader.binary("password") if has_password else None
    if not reader.at_end():
        raise MalformedPacket(f"CONNECT: {reader.remaining()} unexpected bytes after the payload")
    return Connect(client_id, protocol_level, clean_start, keepalive, will, username, password,
                   properties, bool(bridge))


def peek_level(data: bytes, pos: int, end: int, default: int) -> int:
    """The protocol level of the CONNECT body `data[pos:end]` if its name and level are a pair
    we speak, else `default`: what a connection answers a CONNECT it refuses in."""
    try:
        reader = Reader(data, pos, end)
        name = reader.utf8("protocol name")
        level = reader.u8("protocol level")
    except MalformedPacket:
        return default
    if level & 0x80 and (level & 0x7F) in (MQTT_3_1, MQTT_3_1_1):
        level &= 0x7F  # a bridge's (see Connect.bridge)
    return level if PROTOCOL_NAMES.get(level) == name else default


def encode_connect(packet: Connect, level: int) -> bytes:
    level = packet.protocol_level
    v5 = level >= MQTT_5
    will = packet.will
    flags = 0x02 if packet.clean_start else 0
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
    if packet.password is not None:
        flags |= 0x40
    if packet.username is not None:
        flags |= 0x80
    body = bytearray(encode_utf8(PROTOCOL_NAMES.get(level, "MQTT")))
    wire_level = level | 0x80 if packet.bridge and level < MQTT_5 else level
    body += bytes((wire_level, flags)) + encode_u16(packet.keepalive)
    if v5:
        body += encode_properties(packet.properties, "CONNECT")
    body += encode_utf8(packet.client_id)
    if will is not None:
        if v5:
            body += encode_properties(will.properties, "WILL")
        body += encode_utf8(will.topic) + encode_binary(will.payload)
    if packet.username is not None:
        body += encode_utf8(packet.username)
    if packet.password is not None:
        body += encode_binary(packet.password)
    return fixed_header(0x10, len(body)) + bytes(body)


def decode_connack(flags: int, reader: Reader, level: int) -> ConnAck:
    ack_flags = reader.u8("connect acknowledge flags")
    if ack_flags & 0xFE:
        raise MalformedPacket("CONNACK: reserved flag bits set [MQTT-3.2.2-1]")
    code = reader.u8("return code")
    if level >= MQTT_5:
        check_reason("CONNACK", code)  # [MQTT-3.2.2-8]
        if code and ack_flags & 0x01:
            raise ProtocolError(f"CONNACK: session present with reason 0x{code:02X} "
                                "[MQTT-3.2.2-6]")
        properties = decode_properties(reader, "CONNACK")
        reason = code
    else:
        properties = NO_PROPERTIES
        reason = REASON_FROM_CONNACK_V3.get(code, code)
    if not reader.at_end():
        raise MalformedPacket("CONNACK: unexpected bytes after the return code")
    return ConnAck(reason, bool(ack_flags & 0x01), properties)


def encode_connack(packet: ConnAck, level: int) -> bytes:
    # Session present is 0 whenever the connection is refused [MQTT-3.2.2-4]. MQTT 3.1 has no
    # such flag: the byte is reserved there (3.1 section 3.2), 0 even for a resumed session.
    flags = 1 if (packet.session_present and packet.reason_code == ReasonCode.SUCCESS
                  and level != MQTT_3_1) else 0
    if level >= MQTT_5:
        body = bytes((flags, packet.reason_code)) + encode_properties(packet.properties, "CONNACK")
        return fixed_header(0x20, len(body)) + body
    code = CONNACK_V3_FROM_REASON.get(packet.reason_code, ConnAckCodeV3.SERVER_UNAVAILABLE)
    return bytes((0x20, 0x02, flags, code))

"""PINGREQ, PINGRESP, DISCONNECT, AUTH: the packets with little or no body.

In 3.x PINGREQ, PINGRESP and DISCONNECT have an empty body; any byte there is malformed.
In 5 DISCONNECT and AUTH may carry a reason code and properties (left out, the reason is
success: 5.0 sections 3.14.2.1 and 3.15.2.1), the code one of their packet's (`reasons.py`);
the encoder leaves out what it can. A server's DISCONNECT never carries a session expiry
interval, which a client-side decoder checks (`decode_server_disconnect`); an AUTH names its
authentication method unless it is the empty short form. AUTH exists only in 5.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import MalformedPacket, ProtocolError, ReasonCode
from .primitives import Reader, fixed_header
from .properties import NO_PROPERTIES, decode_properties, encode_properties
from .reasons import check_reason

PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14
AUTH = 15


@dataclass(frozen=True, slots=True)
class PingReq:
    PACKET_TYPE: ClassVar[int] = PINGREQ


@dataclass(frozen=True, slots=True)
class PingResp:
    PACKET_TYPE: ClassVar[int] = PINGRESP


@dataclass(frozen=True, slots=True)
class Disconnect:
    PACKET_TYPE: ClassVar[int] = DISCONNECT
    reason_code: int = ReasonCode.SUCCESS
    properties: Mapping[str, Any] = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Auth:
    PACKET_TYPE: ClassVar[int] = AUTH
    reason_code: int = ReasonCode.SUCCESS
    properties: Mapping[str, Any] = NO_PROPERTIES


PING_REQ = PingReq()
PING_RESP = PingResp()


def _empty(name: str, packet: object) -> Callable[[int, Reader, int], object]:
    def decode(flags: int, reader: Reader, level: int) -> object:
        if not reader.at_end():
            raise MalformedPacket(f"{name}: {reader.remaining()} unexpected bytes in the body")
        return packet

    return decode


decode_pingreq = _empty("PINGREQ", PING_REQ)
decode_pingresp = _empty("PINGRESP", PING_RESP)


def encode_pingreq(packet: PingReq, level: int) -> bytes:
    return b"\xc0\x00"


def encode_pingresp(packet: PingResp, level: int) -> bytes:
    return b"\xd0\x00"


def _reason_and_props(reader: Reader, name: str) -> tuple[int, Mapping[str, Any]]:
    reason: int = ReasonCode.SUCCESS
    if not reader.at_end():
        reason = reader.u8("reason code")
        check_reason(name, reason)  # [MQTT-3.14.2-1] [MQTT-3.15.2-1]
    props = decode_properties(reader, name) if not reader.at_end() else NO_PROPERTIES
    if not reader.at_end():
        raise MalformedPacket(f"{name}: {reader.remaining()} unexpected bytes")
    return reason, props


def decode_disconnect(flags: int, reader: Reader, level: int) -> Disconnect:
    if level < 5:
        if not reader.at_end():
            raise MalformedPacket(f"DISCONNECT: {reader.remaining()} unexpected bytes in the body")
        return Disconnect()
    return Disconnect(*_reason_and_props(reader, "DISCONNECT"))


def decode_server_disconnect(flags: int, reader: Reader, level: int) -> Disconnect:
    """A DISCONNECT as a client receives it."""
    packet = decode_disconnect(flags, reader, level)
    if "session_expiry_interval" in packet.properties:
        raise ProtocolError("DISCONNECT from the server with a session expiry interval "
                            "[MQTT-3.14.2-2]")
    return packet


def _encode_reason(first: int, reason: int, props: Mapping[str, Any], name: str) -> bytes:
    if reason == ReasonCode.SUCCESS and not props:
        return bytes((first, 0))
    body = bytes((reason,)) + (encode_properties(props, name) if props else b"")
    return fixed_header(first, len(body)) + body


def encode_disconnect(packet: Disconnect, level: int) -> bytes:
    if level < 5:
        return b"\xe0\x00"
    return _encode_reason(0xE0, packet.reason_code, packet.properties, "DISCONNECT")


def decode_auth(flags: int, reader: Reader, level: int) -> Auth:
    if level < 5:
        raise MalformedPacket("AUTH: packet type 15 is reserved before MQTT 5")
    short_form = reader.at_end()
    packet = Auth(*_reason_and_props(reader, "AUTH"))
    if not short_form and "authentication_method" not in packet.properties:
        raise ProtocolError("AUTH without an authentication method (5.0 section 3.15.2.2.2)")
    return packet


def encode_auth(packet: Auth, level: int) -> bytes:
    return _encode_reason(0xF0, packet.reason_code, packet.properties, "AUTH")

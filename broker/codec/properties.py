"""MQTT 5 properties: one table, id -> (name, wire type, packets it may appear in).

Properties are carried as a plain mapping from name to value. `user_property` is a list of
(name, value) pairs and `subscription_identifier` a list of ints, because both may repeat
(the identifier only in PUBLISH; a SUBSCRIBE carries at most one); any other property
appearing twice is a protocol error. A property identifier that is unknown or not valid for
the packet it is in makes the packet malformed (5.0 section 2.2.2.2), and so does a property
length past the packet's end. A value the property cannot take is a protocol error, each
checked here as it is read: a byte that must be 0 or 1, a receive maximum, maximum packet
size or subscription identifier of 0, a topic alias of 0 (reason 0x94), a response topic that
is no topic name, authentication data without a method. Rules that depend on the sender or the
rest of the packet live with that packet. MQTT 3.x packets have no properties: the codec never
calls into this module for them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import MalformedPacket, ProtocolError, ReasonCode
from .primitives import (
    Reader,
    encode_binary,
    encode_u16,
    encode_utf8,
    encode_varint,
)


class _NoProperties(Mapping[str, Any]):
    """The shared empty property set: immutable and hashable, so a dataclass may default to it."""

    __slots__ = ()

    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "{}"


NO_PROPERTIES: Mapping[str, Any] = _NoProperties()

_ALL = frozenset({"CONNECT", "CONNACK", "PUBLISH", "WILL", "PUBACK", "PUBREC", "PUBREL",
                  "PUBCOMP", "SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "DISCONNECT",
                  "AUTH"})
_MSG = frozenset({"PUBLISH", "WILL"})
_ACKS = frozenset({"CONNACK", "PUBACK", "PUBREC", "PUBREL", "PUBCOMP", "SUBACK", "UNSUBACK",
                   "DISCONNECT", "AUTH"})

# id: (name, wire type, packets)
PROPERTIES: dict[int, tuple[str, str, frozenset[str]]] = {
    0x01: ("payload_format_indicator", "byte", _MSG),
    0x02: ("message_expiry_interval", "u32", _MSG),
    0x03: ("content_type", "utf8", _MSG),
    0x08: ("response_topic", "utf8", _MSG),
    0x09: ("correlation_data", "binary", _MSG),
    0x0B: ("subscription_identifier", "varint", frozenset({"PUBLISH", "SUBSCRIBE"})),
    0x11: ("session_expiry_interval", "u32", frozenset({"CONNECT", "CONNACK", "DISCONNECT"})),
    0x12: ("assigned_client_identifier", "utf8", frozenset({"CONNACK"})),
    0x13: ("server_keep_alive", "u16", frozenset({"CONNACK"})),
    0x15: ("authentication_method", "utf8", frozenset({"CONNECT", "CONNACK", "AUTH"})),
    0x16: ("authentication_data", "binary", frozenset({"CONNECT", "CONNACK", "AUTH"})),
    0x17: ("request_problem_information", "byte", frozenset({"CONNECT"})),
    0x18: ("will_delay_interval", "u32", frozenset({"WILL"})),
    0x19: ("request_response_information", "byte", frozenset({"CONNECT"})),
    0x1A: ("response_information", "utf8", frozenset({"CONNACK"})),
    0x1C: ("server_reference", "utf8", frozenset({"CONNACK", "DISCONNECT"})),
    0x1F: ("reason_string", "utf8", _ACKS),
    0x21: ("receive_maximum", "u16", frozenset({"CONNECT", "CONNACK"})),
    0x22: ("topic_alias_maximum", "u16", frozenset({"CONNECT", "CONNACK"})),
    0x23: ("topic_alias", "u16", frozenset({"PUBLISH"})),
    0x24: ("maximum_qos", "byte", frozenset({"CONNACK"})),
    0x25: ("retain_available", "byte", frozenset({"CONNACK"})),
    0x26: ("user_property", "pair", _ALL),
    0x27: ("maximum_packet_size", "u32", frozenset({"CONNECT", "CONNACK"})),
    0x28: ("wildcard_subscription_available", "byte", frozenset({"CONNACK"})),
    0x29: ("subscription_identifier_available", "byte", frozenset({"CONNACK"})),
    0x2A: ("shared_subscription_available", "byte", frozenset({"CONNACK"})),
}

PROPERTY_IDS: dict[str, int] = {name: pid for pid, (name, _t, _p) in PROPERTIES.items()}
_REPEATABLE = frozenset({"user_property", "subscription_identifier"})

# Properties whose value is 0 or 1, and the section that says so; anything else is a
# Protocol Error (the payload format indicator's section defines only those two values).
ZERO_OR_ONE = {
    "payload_format_indicator": "3.3.2.3.2",
    "request_response_information": "3.1.2.11.6",
    "request_problem_information": "3.1.2.11.7",
    "maximum_qos": "3.2.2.3.4",
    "retain_available": "3.2.2.3.5",
    "wildcard_subscription_available": "3.2.2.3.11",
    "subscription_identifier_available": "3.2.2.3.12",
    "shared_subscription_available": "3.2.2.3.13",
}
# Properties for which 0 is a Protocol Error, and the section that says so.
NOT_ZERO = {
    "receive_maximum": "3.1.2.11.3",
    "maximum_packet_size": "3.1.2.11.4",
    "subscription_identifier": "3.3.2.3.8",
}


def _check_value(name: str, value: Any, packet: str) -> None:
    """Raise `ProtocolError` if `value` is one the property `name` cannot take."""
    if name in ZERO_OR_ONE:
        if value > 1:
            raise ProtocolError(f"{packet}: {name} {value}, not 0 or 1 "
                                f"(5.0 section {ZERO_OR_ONE[name]})")
    elif name in NOT_ZERO:
        if not value:
            raise ProtocolError(f"{packet}: {name} 0 (5.0 section {NOT_ZERO[name]})")
    elif name == "topic_alias":
        if not value:  # the receiver answers DISCONNECT 0x94 (5.0 section 3.3.2.3.4)
            raise ProtocolError(f"{packet}: topic alias 0 [MQTT-3.3.2-8]",
                                ReasonCode.TOPIC_ALIAS_INVALID)
    elif name == "response_topic":
        if not value:
            raise ProtocolError(f"{packet}: empty response topic [MQTT-4.7.3-1]")
        if "+" in value or "#" in value:
            raise ProtocolError(f"{packet}: wildcard in response topic {value!r} "
                                "[MQTT-3.3.2-14]")


def _read_value(reader: Reader, wire_type: str, name: str) -> Any:
    if wire_type == "byte":
        return reader.u8(name)
    if wire_type == "u16":
        return reader.u16(name)
    if wire_type == "u32":
        return reader.u32(name)
    if wire_type == "varint":
        return reader.varint(name)
    if wire_type == "utf8":
        return reader.utf8(name)
    if wire_type == "binary":
        return reader.binary(name)
    return (reader.utf8(name), reader.utf8(name))  # "pair"


def decode_properties(reader: Reader, packet: str) -> Mapping[str, Any]:
    """Read a property length and the properties after it (5.0 section 2.2.2)."""
    length = reader.varint("property length")
    if length == 0:
        return NO_PROPERTIES
    end = reader.pos + length
    if end > reader.end:
        raise MalformedPacket(f"{packet}: property length {length} runs past the packet")
    props: dict[str, Any] = {}
    sub = Reader(reader.data, reader.pos, end)
    while not sub.at_end():
        pid = sub.varint("property identifier")
        entry = PROPERTIES.get(pid)
        if entry is None:
            raise MalformedPacket(f"{packet}: unknown property identifier 0x{pid:02X}")
        name, wire_type, packets = entry
        if packet not in packets:
            # "An Identifier which is not valid for its packet type ... is a Malformed Packet"
            # (5.0 section 2.2.2.2): reason 0x81, not 0x82.
            raise MalformedPacket(f"{packet}: property {name} is not valid in this packet")
        value = _read_value(sub, wire_type, name)
        _check_value(name, value, packet)
        if name not in props:
            props[name] = [value] if name in _REPEATABLE else value
        elif name == "user_property" or (name == "subscription_identifier"
                                         and packet == "PUBLISH"):
            props[name].append(value)
        else:  # a SUBSCRIBE's subscription identifier too (5.0 section 3.8.2.1.2)
            raise ProtocolError(f"{packet}: property {name} appears twice (5.0 section 3)")
    if "authentication_data" in props and "authentication_method" not in props:
        raise ProtocolError(f"{packet}: authentication data without an authentication method "
                            "(5.0 section 3.1.2.11.10)")
    reader.pos = end
    return props


def _write_value(wire_type: str, value: Any) -> bytes:
    if wire_type == "byte":
        return bytes((value,))
    if wire_type == "u16":
        return encode_u16(value)
    if wire_type == "u32":
        return int.to_bytes(value, 4, "big")
    if wire_type == "varint":
        return encode_varint(value)
    if wire_type == "utf8":
        return encode_utf8(value)
    if wire_type == "binary":
        return encode_binary(value)
    return encode_utf8(value[0]) + encode_utf8(value[1])


def encode_properties(props: Mapping[str, Any], packet: str) -> bytes:
    """Property length then the properties; an empty mapping is the single byte 0x00."""
    if not props:
        return b"\x00"
    out = bytearray()
    for name, value in props.items():
        pid = PROPERTY_IDS[name]
        _name, wire_type, packets = PROPERTIES[pid]
        if packet not in packets:
            raise ValueError(f"property {name} does not belong in {packet}")
        values = value if name in _REPEATABLE else (value,)
        for item in values:
            out += encode_varint(pid)
            out += _write_value(wire_type, item)
    return encode_varint(len(out)) + bytes(out)

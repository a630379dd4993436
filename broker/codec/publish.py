"""PUBLISH, decode and encode side by side. This is the hot path, so it reads bytes directly.

Rules: QoS 3 is malformed [MQTT-3.3.1-4]; DUP must be 0 at QoS 0 [MQTT-3.3.1-2]; the topic
name has no wildcard [MQTT-3.3.2-2] and is not empty [MQTT-4.7.3-1] (MQTT 5 allows an empty
topic only together with a topic alias, which the protocol checks); a QoS 1/2 packet id is
non-zero [MQTT-2.3.1-1].

`encode_publish_parts` returns the pieces of an outgoing PUBLISH so that one message fanned
out to many subscribers is laid out once and only the packet id and header byte differ.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import MalformedPacket
from .primitives import Reader, decode_utf8, encode_utf8, encode_varint
from .properties import NO_PROPERTIES, decode_properties, encode_properties

PUBLISH = 3


@dataclass(slots=True)
class Publish:
    """A PUBLISH packet. Unlike the other packets it is not frozen: one is built per message
    on the hot path, and a frozen dataclass costs several times as much to construct. Treat
    it as immutable all the same. `raw` is the whole packet as received (the decoder sets
    it for MQTT 3.x), so a message can be forwarded without being encoded again."""

    PACKET_TYPE: ClassVar[int] = PUBLISH
    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int = 0
    properties: Mapping[str, Any] = NO_PROPERTIES
    raw: bytes | None = field(default=None, compare=False, repr=False)


TOPIC_CACHE_SIZE = 256  # topic names one connection remembers as already validated


def decode_publish(flags: int, reader: Reader, level: int) -> Publish:
    packet = decode_publish_body(reader.data, reader.pos, reader.end, flags, level, None)
    reader.pos = reader.end
    return packet


def decode_publish_body(data: bytes, pos: int, end: int, flags: int, level: int,
                        topics: dict[bytes, str] | None) -> Publish:
    """Decode the body `data[pos:end]`. `topics` maps raw topic bytes already validated on
    this connection to their text, so a device publishing to the same few topics pays for
    the UTF-8 and wildcard checks once."""
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise MalformedPacket("PUBLISH: QoS 3 [MQTT-3.3.1-4]")
    dup = bool(flags & 0x08)
    if dup and qos == 0:
        raise MalformedPacket("PUBLISH: DUP set on a QoS 0 message [MQTT-3.3.1-2]")
    if pos + 2 > end:
        raise MalformedPacket("truncated packet: PUBLISH topic length")
    tlen = (data[pos] << 8) | data[pos + 1]
    pos += 2
    if pos + tlen > end:
        raise MalformedPacket("truncated packet: PUBLISH topic name")
    raw_topic = data[pos:pos + tlen]
    topic = topics.get(raw_topic) if topics is not None else None
    if topic is None:
        topic = decode_utf8(bytes(raw_topic), "topic name")
        if "+" in topic or "#" in topic:
            raise MalformedPacket(f"PUBLISH: wildcard in topic name {topic!r} [MQTT-3.3.2-2]")
        if not topic and level < 5:
            raise MalformedPacket("PUBLISH: empty topic name [MQTT-4.7.3-1]")
        if topics is not None and len(topics) < TOPIC_CACHE_SIZE:
            topics[bytes(raw_topic)] = topic
    pos += tlen
    packet_id = 0
    if qos:
        if pos + 2 > end:
            raise MalformedPacket("truncated packet: PUBLISH packet identifier")
        packet_id = (data[pos] << 8) | data[pos + 1]
        pos += 2
        if not packet_id:
            raise MalformedPacket("PUBLISH: packet identifier 0 [MQTT-2.3.1-1]")
    properties = NO_PROPERTIES
    if level >= 5:
        reader = Reader(data, pos, end)
        properties = decode_properties(reader, "PUBLISH")
        pos = reader.pos
    return Publish(topic, data[pos:end], qos, bool(flags & 0x01), dup, packet_id, properties)


def encode_publish_parts(topic: str, payload: bytes, level: int,
                         properties: Mapping[str, Any] = NO_PROPERTIES
                         ) -> tuple[bytes, bytes, int]:
    """The topic bytes, the property bytes (empty before MQTT 5), and the remaining length
    without a packet id. A QoS 1/2 packet puts two bytes of packet id between the two parts.
    """
    topic_part = encode_utf8(topic)
    props_part = encode_properties(properties, "PUBLISH") if level >= 5 else b""
    return topic_part, props_part, len(topic_part) + len(props_part) + len(payload)


def publish_first_byte(qos: int, retain: bool, dup: bool) -> int:
    return 0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)


def encode_publish(packet: Publish, level: int) -> bytes:
    topic_part, props_part, length = encode_publish_parts(
        packet.topic, packet.payload, level, packet.properties)
    first = bytes((publish_first_byte(packet.qos, packet.retain, packet.dup),))
    if packet.qos:
        return (first + encode_varint(length + 2) + topic_part
                + packet.packet_id.to_bytes(2, "big") + props_part + packet.payload)
    return first + encode_varint(length) + topic_part + props_part + packet.payload

"""PUBLISH, decode and encode side by side. This is the hot path, so it reads bytes directly.

Rules: QoS 3 is malformed [MQTT-3.3.1-4]; DUP must be 0 at QoS 0 [MQTT-3.3.1-2]; the topic
name is a valid topic name by `topics.validate_topic_name` [MQTT-3.3.2-2]; a QoS 1/2 packet id
is non-zero [MQTT-2.3.1-1]. MQTT 5 allows an empty topic only together with a topic alias
(a protocol error otherwise); the properties are checked as they are read (`properties.py`:
topic alias 0 is reason 0x94), and a client may not send a subscription identifier
[MQTT-3.3.4-6] (`check_client_publish`, which the server-side frame decoder calls). Whether an
alias is within the maximum, or was ever set, is the protocol's business: it needs state.
A property length of 0, what most clients send, costs one byte test.

The outgoing side is built for fan-out: `lay_out_publish` does the work one message needs once
(topic and property fields, remaining length), and `publish_qos0` / `publish_with_id` put a
delivery together from that layout, so a message sent to many subscribers is laid out once and
only the header byte and packet id differ. The decoder goes further for an MQTT 3.x PUBLISH,
and for an MQTT 5 one with property length 0 (what most clients send): it keeps what its
deliveries at that level can reuse as received (`Publish.forwardable`), and `splice_publish`
(`splice_publish_v5`) builds a QoS 1/2 delivery from that.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from sys import intern
from typing import Any, ClassVar

from ..errors import MalformedPacket, ProtocolError
from ..topics import validate_topic_name
from .primitives import Reader, decode_utf8, encode_utf8, encode_varint
from .properties import NO_PROPERTIES, decode_properties, encode_properties

PUBLISH = 3


@dataclass(slots=True)
class Publish:
    """A PUBLISH packet. Unlike the other packets it is not frozen: one is built per message
    on the hot path, and a frozen dataclass costs several times as much to construct. Treat
    it as immutable all the same. `forwardable` is what the deliveries of its message at the
    level it came in can reuse of the packet as received (the decoder sets it for MQTT 3.x,
    and for MQTT 5 when the property length is 0, so nothing in it is per hop): at QoS 0 the
    whole packet, a QoS 0 delivery as it is; at QoS 1/2 its remaining length and topic field,
    which `splice_publish` (MQTT 5: `splice_publish_v5`) puts between a new header byte and
    packet id."""

    PACKET_TYPE: ClassVar[int] = PUBLISH
    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int = 0
    properties: Mapping[str, Any] = NO_PROPERTIES
    forwardable: bytes | None = field(default=None, compare=False, repr=False)


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
        if topic or level < 5:  # MQTT 5: an empty one comes with a topic alias
            validate_topic_name(topic, "PUBLISH: ")  # [MQTT-3.3.2-2] [MQTT-4.7.3-1]
        if topics is not None:
            # One string per topic name across connections, and past this connection's
            # cache: a message queued for an offline session keeps its topic, and a fill
            # of 2,000 topics would otherwise hold a copy per message (63 B of 64-B ones).
            # Interned strings are freed with their last user: no table of client input grows.
            topic = intern(topic)
            if len(topics) < TOPIC_CACHE_SIZE:
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
        if pos < end and not data[pos]:  # property length 0
            pos += 1
        else:
            reader = Reader(data, pos, end)
            properties = decode_properties(reader, "PUBLISH")
            pos = reader.pos
        if not tlen and "topic_alias" not in properties:
            raise ProtocolError("PUBLISH: empty topic name and no topic alias "
                                "(5.0 section 3.3.2.1)")
    return Publish(topic, data[pos:end], qos, bool(flags & 0x01), dup, packet_id, properties)


def check_client_publish(packet: Publish) -> None:
    """The rules for a PUBLISH that a client sent, beyond those of any PUBLISH."""
    if "subscription_identifier" in packet.properties:
        raise ProtocolError("PUBLISH from a client with a subscription identifier "
                            "[MQTT-3.3.4-6]")


# The header byte of an outgoing PUBLISH, by [qos][retain][dup].
_FIRST_BYTES = tuple(tuple(tuple(bytes((0x30 | dup << 3 | qos << 1 | retain,))
                                 for dup in (0, 1)) for retain in (0, 1)) for qos in range(3))

# What every delivery of one message at one protocol level shares: the topic field, the
# property field (empty before MQTT 5), the remaining length without a packet id, and whether
# it was laid out for MQTT 5.
PublishLayout = tuple[bytes, bytes, int, bool]


def lay_out_publish(topic: str, payload: bytes, level: int,
                    properties: Mapping[str, Any] = NO_PROPERTIES) -> PublishLayout:
    """The part of an outgoing PUBLISH that is the same for every delivery of a message."""
    v5 = level >= 5
    topic_part = encode_utf8(topic)
    props_part = encode_properties(properties, "PUBLISH") if v5 else b""
    return topic_part, props_part, len(topic_part) + len(props_part) + len(payload), v5


def publish_qos0(layout: PublishLayout, payload: bytes, retain: bool) -> bytes:
    """A QoS 0 PUBLISH: no packet id, and never DUP [MQTT-3.3.1-2]."""
    return b"".join((_FIRST_BYTES[0][retain][0], encode_varint(layout[2]), layout[0], layout[1],
                     payload))


def publish_with_id(layout: PublishLayout, payload: bytes, qos: int, retain: bool, dup: bool,
                    packet_id: int) -> bytes:
    """A QoS 1/2 PUBLISH: the packet id goes between the topic and the properties."""
    return b"".join((_FIRST_BYTES[qos][retain][dup], encode_varint(layout[2] + 2), layout[0],
                     packet_id.to_bytes(2, "big"), layout[1], payload))


def splice_publish(head: bytes, payload: bytes, qos: int, retain: bool, dup: bool,
                   packet_id: int) -> bytes:
    """A QoS 1/2 MQTT 3.x PUBLISH from the `forwardable` head of a received QoS 1/2 one: a new
    header byte and packet id around the bytes as received (a packet id is always two bytes,
    so the remaining length holds)."""
    return b"".join((_FIRST_BYTES[qos][retain][dup], head, packet_id.to_bytes(2, "big"), payload))


def splice_publish_v5(head: bytes, payload: bytes, qos: int, retain: bool, dup: bool,
                      packet_id: int) -> bytes:
    """The same for an MQTT 5 PUBLISH received with property length 0: the packet id is
    followed by that property length, as it was in the received packet."""
    # packet id and a property length of 0 in one: three bytes, the last one 0x00
    return b"".join((_FIRST_BYTES[qos][retain][dup], head, (packet_id << 8).to_bytes(3, "big"),
                     payload))


def encode_publish(packet: Publish, level: int) -> bytes:
    layout = lay_out_publish(packet.topic, packet.payload, level, packet.properties)
    if packet.qos:
        return publish_with_id(layout, packet.payload, packet.qos, packet.retain, packet.dup,
                               packet.packet_id)
    return publish_qos0(layout, packet.payload, packet.retain)

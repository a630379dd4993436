"""Framing: bytes in, packets out (`FrameDecoder`), and packets to bytes (`encode`).

The decoder is sans-I/O: `feed()` whatever arrived, then call `next_packet()` until it returns
None; every complete packet in the buffer comes out, so one read can yield many packets.

Rules enforced here: reserved packet type 0 (3.1.1 section 2.2.1); the fixed-header flags of
every type but PUBLISH [MQTT-2.2.2-2], from 3.1.1 on (3.1 gives them meaning, and the CONNECT
that names the level is checked as 3.1.1); a remaining length of at most four bytes
[MQTT-1.5.5-1]; the maximum packet size, checked on the header alone so that a huge declared
length holds no memory; and which side may send which packet (a server refuses CONNACK,
SUBACK, UNSUBACK and PINGRESP; a client refuses CONNECT, SUBSCRIBE, UNSUBSCRIBE and PINGREQ).
The MQTT 5 rules that depend on the sender are applied here, by side: a client's PUBLISH
carries no subscription identifier, a server's DISCONNECT no session expiry interval.

Until a CONNECT has been decoded, a server-side decoder accepts packets of at most
`CONNECT_PACKET_LIMIT` bytes; a CONNECT switches the decoder to that CONNECT's protocol level,
so the packets behind it in the same buffer are read with the right rules. So does a CONNECT
that breaks a rule after its protocol name and level were read (an MQTT 5 property of 0, say):
`protocol_level` then tells the connection to answer in the client's version (MQTT 5: a
CONNACK with the reason code, 5.0 section 4.13.1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import MalformedPacket, MQTTError, PacketTooLarge, ProtocolError
from . import acks, connect, control, publish, subscribe
from .primitives import VARINT_MAX, Reader
from .properties import NO_PROPERTIES

# The largest CONNECT a 3.1.1 client can build is five 64 KiB fields plus headers (327,700
# bytes); MQTT 5 adds properties. Anything larger before CONNECT is refused on its header.
CONNECT_PACKET_LIMIT = 512 * 1024
MAX_PACKET_SIZE = VARINT_MAX + 5

Packet = Any  # one of the packet dataclasses; kept loose so the table below stays the truth

_Decoder = Callable[[int, Reader, int], Packet]

# packet type -> (name, decoder, required fixed-header flags or None for PUBLISH)
_DECODERS: dict[int, tuple[str, _Decoder, int | None]] = {
    connect.CONNECT: ("CONNECT", connect.decode_connect, 0),
    connect.CONNACK: ("CONNACK", connect.decode_connack, 0),
    publish.PUBLISH: ("PUBLISH", publish.decode_publish, None),
    acks.PUBACK: ("PUBACK", acks.decode_puback, 0),
    acks.PUBREC: ("PUBREC", acks.decode_pubrec, 0),
    acks.PUBREL: ("PUBREL", acks.decode_pubrel, 2),  # [MQTT-3.6.1-1]
    acks.PUBCOMP: ("PUBCOMP", acks.decode_pubcomp, 0),
    subscribe.SUBSCRIBE: ("SUBSCRIBE", subscribe.decode_subscribe, 2),  # [MQTT-3.8.1-1]
    subscribe.SUBACK: ("SUBACK", subscribe.decode_suback, 0),
    subscribe.UNSUBSCRIBE: ("UNSUBSCRIBE", subscribe.decode_unsubscribe, 2),  # [MQTT-3.10.1-1]
    subscribe.UNSUBACK: ("UNSUBACK", subscribe.decode_unsuback, 0),
    control.PINGREQ: ("PINGREQ", control.decode_pingreq, 0),
    control.PINGRESP: ("PINGRESP", control.decode_pingresp, 0),
    control.DISCONNECT: ("DISCONNECT", control.decode_disconnect, 0),
    control.AUTH: ("AUTH", control.decode_auth, 0),
}

# What a client reads: the same, but a DISCONNECT is checked as a server's.
_CLIENT_SIDE_DECODERS = {**_DECODERS,
                         control.DISCONNECT: ("DISCONNECT", control.decode_server_disconnect, 0)}

PACKET_NAMES = {ptype: entry[0] for ptype, entry in _DECODERS.items()}
SERVER_ONLY = frozenset({connect.CONNACK, subscribe.SUBACK, subscribe.UNSUBACK, control.PINGRESP})
CLIENT_ONLY = frozenset({connect.CONNECT, subscribe.SUBSCRIBE, subscribe.UNSUBSCRIBE,
                         control.PINGREQ})


class FrameDecoder:
    """Turns a byte stream into packets. One per connection; not shared."""

    __slots__ = ("protocol_level", "max_packet_size", "_buf", "_pos", "_chunks", "_chunks_len",
                 "_need", "_refused", "_before_connect", "_topics", "_server_side", "_decoders")

    def __init__(self, *, server_side: bool = True, max_packet_size: int = MAX_PACKET_SIZE,
                 protocol_level: int = connect.MQTT_3_1_1) -> None:
        self.protocol_level = protocol_level
        self.max_packet_size = max_packet_size
        self._buf = b""
        self._pos = 0
        # Bytes held back until a large packet is complete; the shared empty tuple until then
        # (an idle connection's decoder owns no list).
        self._chunks: list[bytes] | tuple[()] = ()
        self._chunks_len = 0
        self._need = 0  # total bytes the packet at _pos needs, once its header is known
        self._refused = SERVER_ONLY if server_side else CLIENT_ONLY
        self._server_side = server_side
        self._decoders = _DECODERS if server_side else _CLIENT_SIDE_DECODERS
        self._before_connect = server_side
        # Topic names this connection sent, validated; made at its first PUBLISH.
        self._topics: dict[bytes, str] | None = None

    def buffered(self) -> int:
        """Bytes received but not yet returned as packets."""
        return len(self._buf) - self._pos + self._chunks_len

    def feed(self, data: bytes) -> None:
        left = len(self._buf) - self._pos
        if not left:
            self._buf = data
        else:
            if self._need and left + self._chunks_len + len(data) < self._need:
                # Still incomplete: keep the piece and join once, not once per read.
                if self._chunks:
                    self._chunks.append(data)
                else:
                    self._chunks = [data]
                self._chunks_len += len(data)
                return
            self._buf = b"".join((self._buf[self._pos:], *self._chunks, data))
            self._chunks = ()
            self._chunks_len = 0
        self._pos = 0

    def next_packet(self) -> Packet | None:
        buf = self._buf
        pos = self._pos
        avail = len(buf) - pos
        if self._chunks or avail < 2:
            if not avail and buf:
                self._buf = b""  # all read: the last read's bytes are not kept while idle
                self._pos = 0
            return None
        first = buf[pos]
        # Remaining length (3.1.1 section 2.2.3): one to four bytes.
        remaining = 0
        shift = 0
        i = pos + 1
        while True:
            if i >= pos + avail:
                return None
            byte = buf[i]
            remaining |= (byte & 0x7F) << shift
            i += 1
            if not byte & 0x80:
                break
            shift += 7
            if shift == 28:
                raise MalformedPacket("remaining length longer than four bytes [MQTT-1.5.5-1]")
        total = i - pos + remaining
        limit = self.max_packet_size
        if self._before_connect and limit > CONNECT_PACKET_LIMIT:
            limit = CONNECT_PACKET_LIMIT
        if total > limit:
            raise PacketTooLarge(f"packet of {total} bytes exceeds the limit of {limit} bytes")
        if total > avail:
            self._need = total
            return None
        self._need = 0
        end = self._pos = pos + total
        packet_type = first >> 4
        if packet_type == publish.PUBLISH:  # the hot path: no table, no Reader
            level = self.protocol_level
            topics = self._topics
            if topics is None:
                topics = self._topics = {}
            packet = publish.decode_publish_body(buf, i, end, first & 0x0F, level, topics)
            if level < 5:  # what its deliveries reuse (see Publish)
                packet.forwardable = (buf[pos + 1:end - len(packet.payload) - 2] if packet.qos
                                      else buf[pos:end])
            elif packet.properties is NO_PROPERTIES:  # property length 0: nothing per hop
                # (an identity test: the empty mapping's len() would be a Python call)
                packet.forwardable = (buf[pos + 1:end - len(packet.payload) - 3] if packet.qos
                                      else buf[pos:end])
            elif self._server_side:
                publish.check_client_publish(packet)  # [MQTT-3.3.4-6]
            return packet
        entry = self._decoders.get(packet_type)
        if entry is None:
            raise MalformedPacket("reserved packet type 0 (3.1.1 section 2.2.1)")
        name, decoder, required_flags = entry
        flags = first & 0x0F
        if (required_flags is not None and flags != required_flags
                and self.protocol_level >= connect.MQTT_3_1_1):
            # 3.1 gave every packet DUP and QoS bits (a resent PUBREL has DUP set, 3.1
            # section 4.1); 3.1.1 made them reserved. Mosquitto checks 3.1.1 and 5 only.
            raise MalformedPacket(f"{name}: reserved fixed-header flags 0x{flags:X} [MQTT-2.2.2-2]")
        if packet_type in self._refused:
            raise ProtocolError(f"{name} may not be sent by this side of the connection")
        try:
            packet = decoder(flags, Reader(buf, i, end), self.protocol_level)
        except MQTTError:
            if packet_type == connect.CONNECT:
                self.protocol_level = connect.peek_level(buf, i, end, self.protocol_level)
            raise
        if packet_type == connect.CONNECT:
            self.protocol_level = packet.protocol_level
            self._before_connect = False
        return packet


_ENCODERS: dict[type, Callable[[Any, int], bytes]] = {
    connect.Connect: connect.encode_connect,
    connect.ConnAck: connect.encode_connack,
    publish.Publish: publish.encode_publish,
    acks.PubAck: acks.encode_ack,
    acks.PubRec: acks.encode_ack,
    acks.PubRel: acks.encode_ack,
    acks.PubComp: acks.encode_ack,
    subscribe.Subscribe: subscribe.encode_subscribe,
    subscribe.SubAck: subscribe.encode_suback,
    subscribe.Unsubscribe: subscribe.encode_unsubscribe,
    subscribe.UnsubAck: subscribe.encode_unsuback,
    control.PingReq: control.encode_pingreq,
    control.PingResp: control.encode_pingresp,
    control.Disconnect: control.encode_disconnect,
    control.Auth: control.encode_auth,
}


def encode(packet: Packet, protocol_level: int = connect.MQTT_3_1_1) -> bytes:
    """The wire bytes of `packet` as spoken at `protocol_level`."""
    return _ENCODERS[type(packet)](packet, protocol_level)

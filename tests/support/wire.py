"""Hand-written wire bytes shared by the codec tests."""

from __future__ import annotations

from typing import Any

from broker.codec import FrameDecoder
from broker.errors import MQTTError

MQTT = "00 04 4D 51 54 54"  # "MQTT"
MQISDP = "00 06 4D 51 49 73 64 70"  # "MQIsdp"
C1_CONNECT_BODY_TAIL = "00 3C 00 02 63 31"  # keepalive 60, client id "c1"


def h(text: str) -> bytes:
    """Bytes from hex written with spaces, as the spec's tables show them."""
    return bytes.fromhex(text)


def drain(decoder: FrameDecoder) -> list[Any]:
    """Every complete packet the decoder holds."""
    out = []
    while (packet := decoder.next_packet()) is not None:
        out.append(packet)
    return out


def varint(n: int) -> bytes:
    """MQTT's variable byte integer (a remaining length)."""
    out = bytearray()
    while True:
        n, low = divmod(n, 128)
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def first_error_bytewise(decoder: FrameDecoder, wire: bytes) -> tuple[MQTTError | None, int]:
    """Feed `wire` one byte at a time: the first error the decoder raises and the index of
    the byte that made it raise (None and the last index if none did). No packet may come
    out before the error."""
    i = -1
    for i in range(len(wire)):
        decoder.feed(wire[i:i + 1])
        try:
            assert decoder.next_packet() is None
        except MQTTError as exc:
            return exc, i
    return None, i

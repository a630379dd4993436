"""Wire primitives: a cursor over one packet body, and the encoders that mirror it.

Rules enforced here, once, for every packet:
- a read past the end of the body is a truncated packet, so `MalformedPacket` (the
  remaining length said otherwise; 3.1.1 section 2.2.3);
- UTF-8 strings must be well-formed and must not contain U+0000 [MQTT-1.5.3-1] [MQTT-1.5.3-2]
  (Python's strict decoder already rejects overlong forms and encoded surrogates);
- a variable byte integer has at most four bytes [MQTT-1.5.5-1].

The cursor only ever sees a complete packet (the frame decoder waits for all of it), so it needs
no rollback: running out of bytes here always means the packet lied about its own length.
"""

from __future__ import annotations

import re

from ..errors import MalformedPacket

_U16_MAX = 0xFFFF
VARINT_MAX = 268_435_455


class Reader:
    """A cursor over `data[pos:end]`; every read checks the bound."""

    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def remaining(self) -> int:
        return self.end - self.pos

    def at_end(self) -> bool:
        return self.pos >= self.end

    def _need(self, n: int, what: str) -> int:
        pos = self.pos
        if pos + n > self.end:
            raise MalformedPacket(
                f"truncated packet: {what} needs {n} bytes, {self.end - pos} left")
        self.pos = pos + n
        return pos

    def u8(self, what: str = "byte") -> int:
        pos = self._need(1, what)
        return self.data[pos]

    def u16(self, what: str = "two-byte integer") -> int:
        pos = self._need(2, what)
        d = self.data
        return (d[pos] << 8) | d[pos + 1]

    def u32(self, what: str = "four-byte integer") -> int:
        pos = self._need(4, what)
        return int.from_bytes(self.data[pos:pos + 4], "big")

    def varint(self, what: str = "variable byte integer") -> int:
        value = 0
        shift = 0
        for _ in range(4):
            byte = self.u8(what)
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
        raise MalformedPacket(f"{what}: more than four bytes [MQTT-1.5.5-1]")

    def binary(self, what: str = "binary data") -> bytes:
        n = self.u16(what)
        pos = self._need(n, what)
        return bytes(self.data[pos:pos + n])

    def utf8(self, what: str = "string") -> str:
        return decode_utf8(self.binary(what), what)

    def rest(self) -> bytes:
        """Everything left in the body (a PUBLISH payload)."""
        data = bytes(self.data[self.pos:self.end])
        self.pos = self.end
        return data


# Code points a string SHOULD NOT contain, which a receiver MAY refuse (spec 1.5.3): the C0
# and C1 control characters and the Unicode non-characters. Mosquitto refuses them, and so
# does greenfly, so that a topic or client id never carries invisible control bytes.
_NON_CHARACTERS = "".join(chr(plane * 0x10000 + low) for plane in range(17)
                          for low in (0xFFFE, 0xFFFF))
DISCOURAGED = re.compile(f"[\x01-\x1f\x7f-\x9f\ufdd0-\ufdef{_NON_CHARACTERS}]")


def decode_utf8(raw: bytes, what: str = "string") -> str:
    """Decode an MQTT UTF-8 string, refusing what the spec forbids and what it discourages."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedPacket(
            f"{what}: ill-formed UTF-8 at byte {exc.start} [MQTT-1.5.3-1]") from None
    if "\x00" in text:
        raise MalformedPacket(f"{what}: contains U+0000 [MQTT-1.5.3-2]")
    bad = DISCOURAGED.search(text)
    if bad is not None:
        raise MalformedPacket(f"{what}: contains U+{ord(bad.group()):04X}, a control character "
                              "or non-character (spec 1.5.3)")
    return text


def encode_varint(value: int) -> bytes:
    if value < 128:
        return _SMALL_VARINTS[value]
    if value > VARINT_MAX:
        raise ValueError(f"variable byte integer out of range: {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


_SMALL_VARINTS = [bytes((i,)) for i in range(128)]


def encode_u16(value: int) -> bytes:
    return value.to_bytes(2, "big")


def encode_binary(data: bytes) -> bytes:
    if len(data) > _U16_MAX:
        raise ValueError(f"binary field longer than 65535 bytes: {len(data)}")
    return len(data).to_bytes(2, "big") + data


def encode_utf8(text: str) -> bytes:
    return encode_binary(text.encode("utf-8"))


def fixed_header(first_byte: int, remaining_length: int) -> bytes:
    """The fixed header: packet type and flags, then the remaining length."""
    return bytes((first_byte,)) + encode_varint(remaining_length)

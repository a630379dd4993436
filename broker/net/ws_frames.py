"""WebSocket frames without I/O: client bytes in, MQTT bytes and whole frames out.

`FrameReader.receive(data)` reads frame headers (RFC 6455 5.2) and nothing else:
- A whole, masked, final binary frame outside a fragmented message is *plain* (what MQTT
  clients send, one per packet): its payload is unmasked here, every plain frame in a row
  with a single XOR, and returned as MQTT bytes.
- Every other frame (control, fragmented, text, unmasked, reserved bits set, malformed) is
  returned whole, in its place in the byte order, for a full WebSocket implementation
  (wsproto, in websocket.py) to judge. Only the fragmentation state is followed here, from
  the headers, so that a binary frame inside a fragmented message is not taken as plain.
- A frame whose declared length is over `max_size` raises `PacketTooLarge` once its header
  is read (none of it is buffered); so does a fragmented message whose frames add up to
  more. An incomplete frame waits for the next `receive`.
The hot path allocates per frame only its payload and mask slices, and calls nothing per
frame: wsproto alone costs ~25 us a frame, more than the broker's own work for a small PUBLISH.
`binary_frame` lays out the server's side: unmasked, final, no extension.
"""

from __future__ import annotations

import struct

from ..errors import PacketTooLarge

_PLAIN = 0x82  # FIN, no reserved bits, opcode 2 (binary)
_MASKED = 0x80
_CONTROL = 0x08  # opcodes 8-15: close, ping, pong and reserved


def binary_frame(data: bytes) -> bytes:
    """An unmasked, final binary frame (server to client) carrying `data`."""
    n = len(data)
    if n < 126:
        header = bytes((_PLAIN, n))
    elif n < 65_536:
        header = struct.pack("!BBH", _PLAIN, 126, n)
    else:
        header = struct.pack("!BBQ", _PLAIN, 127, n)
    return header + data


def unmask(payloads: list[bytes], keys: list[bytes]) -> bytes:
    """The payloads of many masked frames, unmasked and joined, with one XOR over them all."""
    joined = b"".join(payloads)
    stream = b"".join([(key * ((len(p) >> 2) + 1))[:len(p)]
                       for key, p in zip(keys, payloads, strict=True)])
    return (int.from_bytes(joined, "little") ^ int.from_bytes(stream, "little")).to_bytes(
        len(joined), "little")


class FrameReader:
    """Splits a client's byte stream into plain MQTT bytes and other frames."""

    __slots__ = ("_buf", "_in_message", "_message_size", "_need", "_pieces", "_pieces_len",
                 "max_size")

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buf = b""  # the start of a frame not complete yet
        self._need = 0  # the bytes that frame needs in all, once its header is read
        self._pieces: list[bytes] = []  # reads kept until it is complete, joined once
        self._pieces_len = 0
        self._in_message = False  # a fragmented message has begun and not ended
        self._message_size = 0  # its payload bytes so far

    def receive(self, data: bytes) -> tuple[bytes, bytes | None]:
        """Add `data`; return the unmasked payloads of the plain frames that come next,
        joined, and the first other frame after them whole (None: no complete frame left).
        After an other frame, call again (with b"" or new bytes) for what follows it."""
        if self._need:
            if len(self._buf) + self._pieces_len + len(data) < self._need:
                # Still incomplete: keep the piece. Joining on every read would cost a frame
                # trickling in a byte at a time the square of its length.
                self._pieces.append(data)
                self._pieces_len += len(data)
                return b"", None
            buf = b"".join((self._buf, *self._pieces, data))
            self._pieces.clear()
            self._pieces_len = self._need = 0
        else:
            buf = self._buf + data if self._buf else data
        pos, end = 0, len(buf)
        payloads: list[bytes] = []
        keys: list[bytes] = []
        other = None
        while end - pos >= 2:
            first, second = buf[pos], buf[pos + 1]
            n = second & 0x7F
            head = pos + (6 if second & _MASKED else 2)
            if n >= 126:
                width = 2 if n == 126 else 8
                if end - pos < 2 + width:
                    break
                n = int.from_bytes(buf[pos + 2:pos + 2 + width], "big")
                head += width
            if n > self.max_size:
                raise PacketTooLarge(f"WebSocket frame of {n} bytes, over max_packet_size "
                                     f"({self.max_size})")
            stop = head + n
            if stop > end:
                self._need = stop - pos
                break
            if first == _PLAIN and second & _MASKED and not self._in_message:
                keys.append(buf[head - 4:head])
                payloads.append(buf[head:stop])
                pos = stop
                continue
            if not first & _CONTROL:
                self._follow_message(first, n)
            other = buf[pos:stop]
            pos = stop
            break
        self._buf = buf[pos:]
        if not payloads:
            return b"", other
        return unmask(payloads, keys), other

    def _follow_message(self, first: int, n: int) -> None:
        """A data frame that is not plain: a fragment (or one wsproto will refuse)."""
        size = self._message_size + n
        if size > self.max_size:
            raise PacketTooLarge(f"WebSocket message over max_packet_size ({self.max_size})")
        final = bool(first & 0x80)
        self._in_message = not final
        self._message_size = 0 if final else size

    def clear(self) -> None:
        """Drop what is buffered: nothing after it will be read."""
        self._buf = b""
        self._pieces.clear()
        self._pieces_len = self._need = 0

"""The WebSocket frame reader without sockets: plain binary frames come back unmasked, every
other frame whole and in order, whatever the reads' boundaries; limits hold at the header."""

from __future__ import annotations

import struct
import time

import pytest

from broker.errors import PacketTooLarge
from broker.net.ws_frames import FrameReader, binary_frame

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
KEY = bytes((0x37, 0xFA, 0x21, 0x3D))


def frame(opcode: int, payload: bytes, fin: bool = True, mask: bytes | None = KEY,
          rsv: int = 0) -> bytes:
    """A client frame as RFC 6455 5.2 lays it out (masked unless `mask` is None)."""
    n = len(payload)
    first = (0x80 if fin else 0) | rsv | opcode
    bit = 0x80 if mask is not None else 0
    if n < 126:
        header = bytes((first, bit | n))
    elif n < 65_536:
        header = bytes((first, bit | 126)) + struct.pack("!H", n)
    else:
        header = bytes((first, bit | 127)) + struct.pack("!Q", n)
    if mask is None:
        return header + payload
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def drain(reader: FrameReader, data: bytes) -> list[tuple[str, bytes]]:
    """Everything one read yields, as ('mqtt', bytes) and ('frame', bytes) in order."""
    out: list[tuple[str, bytes]] = []
    while True:
        plain, other = reader.receive(data)
        data = b""
        if plain:
            out.append(("mqtt", plain))
        if other is None:
            return out
        out.append(("frame", other))


def mqtt_bytes(items: list[tuple[str, bytes]]) -> bytes:
    assert all(kind == "mqtt" for kind, _ in items), items
    return b"".join(data for _, data in items)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65_535, 65_536, 70_001])
def test_a_masked_binary_frame_of_each_length_width_comes_back_unmasked(size):
    payload = bytes(i % 251 for i in range(size))
    reader = FrameReader(max_size=100_000)
    assert mqtt_bytes(drain(reader, frame(BINARY, payload))) == payload


def test_many_plain_frames_in_one_read_are_joined_in_order():
    payloads = [b"\x30\x05\x00\x01aAB", b"", b"x" * 200, b"\xc0\x00"]
    data = b"".join(frame(BINARY, p, mask=bytes((i, 1, 2, 3))) for i, p in enumerate(payloads))
    assert drain(FrameReader(1000), data) == [("mqtt", b"".join(payloads))]


def test_frames_split_across_reads_at_every_byte_give_the_same_bytes():
    payloads = [b"a" * 5, b"b" * 130, b"c" * 3, b"d" * 126]
    data = b"".join(frame(BINARY, p) for p in payloads)
    for cut in range(len(data) + 1):
        reader = FrameReader(1000)
        got = mqtt_bytes(drain(reader, data[:cut]) + drain(reader, data[cut:]))
        assert got == b"".join(payloads), cut


def test_a_frame_fed_one_byte_at_a_time_comes_out_once_complete():
    data = frame(BINARY, b"z" * 300)
    reader = FrameReader(1000)
    got = [drain(reader, data[i:i + 1]) for i in range(len(data))]
    assert got[:-1] == [[]] * (len(data) - 1) and got[-1] == [("mqtt", b"z" * 300)]


def test_control_frames_come_back_whole_in_their_place():
    ping, pong, close = (frame(PING, b"hi"), frame(PONG, b""),
                         frame(CLOSE, struct.pack("!H", 1000)))
    data = frame(BINARY, b"one") + ping + frame(BINARY, b"two") + pong + close
    assert drain(FrameReader(1000), data) == [
        ("mqtt", b"one"), ("frame", ping), ("mqtt", b"two"), ("frame", pong), ("frame", close)]


@pytest.mark.parametrize("odd", [
    frame(BINARY, b"unmasked", mask=None),
    frame(TEXT, b"text"),
    frame(BINARY, b"rsv1", rsv=0x40),
    frame(0x3, b"reserved opcode"),
])
def test_frames_that_are_not_plain_binary_are_left_to_be_judged(odd):
    assert drain(FrameReader(1000), odd + frame(BINARY, b"after")) == [
        ("frame", odd), ("mqtt", b"after")]


def test_a_fragmented_message_goes_whole_frame_by_frame_then_plain_frames_resume():
    start = frame(BINARY, b"\x30\x03", fin=False)
    ping = frame(PING, b"inside")  # control frames may come between fragments
    end = frame(CONT, b"\x00\x01t")
    reader = FrameReader(1000)
    assert drain(reader, start + ping) == [("frame", start), ("frame", ping)]
    assert drain(reader, end + frame(BINARY, b"plain again")) == [
        ("frame", end), ("mqtt", b"plain again")]


def test_a_binary_frame_inside_a_fragmented_message_is_not_plain():
    start, stray = frame(BINARY, b"a", fin=False), frame(BINARY, b"b")
    assert drain(FrameReader(1000), start + stray) == [("frame", start), ("frame", stray)]


def test_a_frame_over_the_limit_is_refused_from_its_header_alone():
    reader = FrameReader(max_size=1000)
    with pytest.raises(PacketTooLarge, match="WebSocket frame of 1001 bytes"):
        reader.receive(frame(BINARY, b"x" * 1001)[:8])  # header and mask key only
    huge = bytes((0x82, 0x80 | 127)) + struct.pack("!Q", 2**63)
    with pytest.raises(PacketTooLarge):
        FrameReader(1000).receive(huge)


def test_a_fragmented_message_over_the_limit_is_refused():
    reader = FrameReader(max_size=1000)
    assert drain(reader, frame(BINARY, b"x" * 600, fin=False))[0][0] == "frame"
    with pytest.raises(PacketTooLarge, match="WebSocket message over max_packet_size"):
        reader.receive(frame(CONT, b"y" * 600))


def test_a_finished_fragmented_message_resets_the_count():
    reader = FrameReader(max_size=1000)
    for _ in range(3):  # 3 x 900 bytes, each message within the limit
        drain(reader, frame(BINARY, b"x" * 450, fin=False) + frame(CONT, b"y" * 450))
    assert drain(reader, frame(BINARY, b"ok")) == [("mqtt", b"ok")]


def test_clear_drops_what_is_buffered():
    reader = FrameReader(1000)
    data = frame(BINARY, b"kept") + frame(BINARY, b"never read")
    assert drain(reader, data[:12]) == [("mqtt", b"kept")]
    reader.clear()
    assert drain(reader, frame(BINARY, b"next")) == [("mqtt", b"next")]


@pytest.mark.parametrize(("size", "header"), [(0, 2), (125, 2), (126, 4), (65_535, 4),
                                              (65_536, 10)])
def test_server_frames_are_unmasked_final_binary_with_the_shortest_length(size, header):
    data = bytes(size)
    out = binary_frame(data)
    assert out[0] == 0x82 and not out[1] & 0x80
    assert len(out) == header + size and out[header:] == data
    assert out == frame(BINARY, data, mask=None)


def test_a_big_frame_trickling_in_a_byte_a_read_costs_linear_time():
    """Found while fuzzing (tests/fuzz): each read joined the whole frame so far to the new
    byte, so a 256 KiB frame sent a byte per TCP segment cost 34 GB of copying (about 5 s;
    a 1 MiB one over a minute). The pieces of a frame whose length is known are kept and
    joined once, as the MQTT decoder does: about 0.3 s here, 2.5 s leaves room for a loaded
    machine and none for the quadratic cost."""
    payload = bytes(range(256)) * 1024
    wire = frame(BINARY, payload)
    reader = FrameReader(1 << 20)
    start = time.perf_counter()
    out = []
    for i in range(len(wire)):
        plain, other = reader.receive(wire[i:i + 1])
        assert other is None
        if plain:
            out.append(plain)
    assert time.perf_counter() - start < 2.5
    assert out == [payload]

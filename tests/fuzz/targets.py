"""The fuzz targets: one function per target, bytes in, an exception out only for a bug.

Each takes one input and raises nothing but for a bug: the codec's own errors (`MQTTError`:
malformed, protocol error, too large, unsupported version) are the answers the broker is
built to give to bad bytes, and are caught here; anything else escapes and the fuzzer
reports it. They are plain functions, so the corpus can be replayed without a fuzzer
(tests/unit/test_fuzz.py) and a crash found by `make fuzz` becomes a regression test.

Input layouts (what tests/fuzz/seed.py writes for the corpus):
- decoder: a config byte (bits 0-1: protocol level 3/4/5/5; bit 2: decode as the client;
  bits 3-7: read size 1-31, 0 for all at once), then the byte stream.
- ws_frames: a byte choosing where the stream is cut in two and a read size of 1-16 bytes,
  then the stream. The frames read must not depend on where reads end (all at once, cut in
  two there, in reads of that size).
- protocol: steps, each a header byte (bit 7: which of two clients; bits 0-6: length) and
  that many bytes, which the client sends through its `Connection` in the in-process
  harness; whatever the broker writes back must decode with the client-side decoder.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from broker.codec import FrameDecoder, encode
from broker.errors import MQTTError
from broker.net.ws_frames import FrameReader

MAX_PACKET = 4096  # small enough that the fuzzer reaches the size limits


def decoder(data: bytes) -> None:
    if not data:
        return
    config, stream = data[0], data[1:]
    level = (3, 4, 5, 5)[config & 3]
    server_side = not config & 4
    chunk = (config >> 3) or len(stream) or 1
    dec = FrameDecoder(server_side=server_side, protocol_level=level,
                       max_packet_size=MAX_PACKET)
    packets = []
    try:
        for start in range(0, len(stream), chunk):
            dec.feed(stream[start:start + chunk])
            while (packet := dec.next_packet()) is not None:
                packets.append((packet, dec.protocol_level))
    except MQTTError:
        pass
    for packet, at in packets:
        # What the decoder accepted, the encoder can write: no exception either way.
        encode(packet, at)


def _frames(reader: FrameReader, pieces: list[bytes]) -> tuple[list[tuple[str, bytes]], bool]:
    """Everything the reader yields for `pieces` in order, adjacent MQTT bytes joined, and
    whether it raised (`PacketTooLarge`)."""
    events: list[tuple[str, bytes]] = []

    def add(kind: str, data: bytes) -> None:
        if kind == "mqtt" and events and events[-1][0] == "mqtt":
            events[-1] = ("mqtt", events[-1][1] + data)
        else:
            events.append((kind, data))

    try:
        for piece in pieces:
            while True:
                plain, other = reader.receive(piece)
                piece = b""
                if plain:
                    add("mqtt", plain)
                if other is None:
                    break
                add("frame", other)
    except MQTTError:
        return events, True
    return events, False


def ws_frames(data: bytes) -> None:
    if not data:
        return
    stream = data[1:]
    cut = data[0] * len(stream) // 255
    whole, whole_raised = _frames(FrameReader(MAX_PACKET), [stream])
    size = 1 + data[0] % 16  # small reads, a byte at a time among them
    for pieces in ([stream[:cut], stream[cut:]],
                   [stream[i:i + size] for i in range(0, len(stream), size)]):
        split, split_raised = _frames(FrameReader(MAX_PACKET), pieces)
        if whole_raised or split_raised:
            # A read that raises loses the plain bytes it had gathered: compare up to there.
            assert whole_raised and split_raised, (whole_raised, split_raised)
            assert split[:len(whole)] == whole or whole[:len(split)] == split
        else:
            assert split == whole, (split, whole)


def _steps(data: bytes) -> list[tuple[int, bytes]]:
    steps = []
    pos = 0
    while pos < len(data):
        header = data[pos]
        n = header & 0x7F
        steps.append((header >> 7, data[pos + 1:pos + 1 + n]))
        pos += 1 + n
    return steps


def protocol(data: bytes) -> None:
    from support.inprocess import InProcessBroker  # tests/ is on sys.path (run.py, pytest)

    broker = InProcessBroker()
    clients = [broker.open(), broker.open()]
    for index, chunk in _steps(data):
        if not chunk:
            continue
        clients[index].feed(chunk)
        for client in clients:
            _read_back(client)


def _read_back(client: Any) -> None:
    """Decode what the broker wrote to `client` as the client would: any error is a bug (the
    broker wrote bytes a client cannot read)."""
    level = client.connection.protocol.protocol_level
    client._decoder.protocol_level = level  # the CONNECT set it; the broker answers in it
    client.received()


TARGETS: dict[str, Callable[[bytes], None]] = {
    "decoder": decoder,
    "ws_frames": ws_frames,
    "protocol": protocol,
}

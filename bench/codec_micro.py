"""The codec alone, per packet: the hot paths an MQTT 5 change must not slow down.

Decodes a read's worth of PUBLISH packets (100 per `feed`, as a busy connection's reader
sees them) at MQTT 3.1.1 and at MQTT 5 with property length 0 (what MQTT.js sends), and
encodes the success acks. Prints nanoseconds per packet, the best of `--repeat` rounds, so
a loaded machine disturbs it less; compare two commits on the same machine, one after the
other.

    .venv/bin/python bench/codec_micro.py [--repeat 7] [--number 2000]
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable

from broker.codec import FrameDecoder, PubAck, Publish, encode, encode_puback_success

TOPIC = "sensors/building-7/floor-3/room-12/temperature"
PAYLOAD = bytes(range(64))
BATCH = 100


def _stream(qos: int, level: int, properties: dict[str, object] | None = None) -> bytes:
    packets = [Publish(TOPIC, PAYLOAD, qos, packet_id=(i + 1) if qos else 0,
                       properties=properties or {}) for i in range(BATCH)]
    return b"".join(encode(p, level) for p in packets)


def _decode_batch(stream: bytes, level: int) -> Callable[[], None]:
    decoder = FrameDecoder(protocol_level=level)  # server side, as a broker reads

    def run() -> None:
        decoder.feed(stream)
        while decoder.next_packet() is not None:
            pass

    return run


def cases() -> dict[str, tuple[Callable[[], object], int]]:
    """name -> (callable, packets per call)."""
    user = {"user_property": [("k", "v")]}
    return {
        "decode PUBLISH qos0 v3.1.1": (_decode_batch(_stream(0, 4), 4), BATCH),
        "decode PUBLISH qos0 v5, no properties": (_decode_batch(_stream(0, 5), 5), BATCH),
        "decode PUBLISH qos1 v3.1.1": (_decode_batch(_stream(1, 4), 4), BATCH),
        "decode PUBLISH qos1 v5, no properties": (_decode_batch(_stream(1, 5), 5), BATCH),
        "decode PUBLISH qos1 v5, one user property": (_decode_batch(_stream(1, 5, user), 5),
                                                      BATCH),
        "encode PUBACK success (fast path)": (lambda: encode_puback_success(4711), 1),
        "encode PubAck(4711) v3.1.1": (lambda: encode(PubAck(4711), 4), 1),
        "encode PubAck(4711) v5": (lambda: encode(PubAck(4711), 5), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--number", type=int, default=2000)
    args = parser.parse_args()
    for name, (fn, per_call) in cases().items():
        number = args.number if per_call > 1 else args.number * 100
        best = min(timeit.repeat(fn, number=number, repeat=args.repeat))
        print(f"{name:45s} {best / number / per_call * 1e9:8.0f} ns/packet")


if __name__ == "__main__":
    main()

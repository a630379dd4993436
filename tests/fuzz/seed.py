"""Write the seed corpus (tests/fuzz/corpus/<target>/) from the codec's catalogues.

    .venv/bin/python tests/fuzz/seed.py

Every named wire case of tests/unit/test_codec*.py (good and malformed, 3.1.1 and 5) becomes
a seed for each target in that target's input layout (tests/fuzz/targets.py): for the
decoder as it is, for the WebSocket reader inside masked binary frames (and a few control
and fragmented frames), and for the protocol after a CONNECT of its level, beside a few
publish/subscribe conversations between two clients. The fuzzer starts from packets that
are whole and valid and mutates from there. Rerun it when a catalogue grows; the files are
named after the cases, so a rerun changes only what changed; `regress_*` files, inputs that
once found a bug, are kept.
"""

from __future__ import annotations

import re
import struct
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TESTS / "unit"), str(TESTS), str(TESTS.parent)]

import test_codec  # noqa: E402
import test_codec_malformed  # noqa: E402
import test_codec_v5  # noqa: E402
import test_codec_v5_malformed  # noqa: E402

from broker.codec import (  # noqa: E402
    Connect,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubOptions,
    Subscribe,
    Unsubscribe,
    encode,
)
from broker.codec.frame import SERVER_ONLY  # noqa: E402

CORPUS = Path(__file__).resolve().parent / "corpus"
KEY = bytes((0x37, 0xFA, 0x21, 0x3D))
MAX_SEED = 4000


def _hex(text: str) -> bytes:
    return bytes.fromhex(text)


def catalogue() -> list[tuple[str, bytes, int, bool]]:
    """(name, wire, protocol level, decoded by the server) for every catalogue case."""
    out = []
    for case in test_codec.CASES:
        wire = _hex(case.wire)
        out.append((case.name, wire, case.level, wire[0] >> 4 not in SERVER_ONLY))
    for case in test_codec_v5.CASES:
        out.append((f"v5_{case.name}", _hex(case.wire), 5, case.sender == test_codec_v5.CLIENT))
    for bad in test_codec_malformed.BAD:
        out.append((f"bad_{bad.name}", _hex(bad.wire), bad.level, bad.server_side))
    for bad in test_codec_v5_malformed.BAD:
        out.append((f"bad_v5_{bad.name}", _hex(bad.wire), 5, bad.server_side))
    return out


def ws_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A masked client frame (RFC 6455 5.2)."""
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        header = bytes((first, 0x80 | n))
    elif n < 65_536:
        header = bytes((first, 0x80 | 126)) + struct.pack("!H", n)
    else:
        header = bytes((first, 0x80 | 127)) + struct.pack("!Q", n)
    return header + KEY + bytes(b ^ KEY[i % 4] for i, b in enumerate(payload))


def steps(*sends: tuple[int, bytes]) -> bytes:
    """The protocol target's layout: (client 0/1, bytes) in pieces of at most 127 bytes."""
    out = bytearray()
    for client, data in sends:
        for start in range(0, max(len(data), 1), 127):
            piece = data[start:start + 127]
            out += bytes(((client << 7) | len(piece),)) + piece
    return bytes(out)


def connect(client_id: str, level: int, clean: bool = True) -> bytes:
    return encode(Connect(client_id, level, clean, 60), level)


def conversations() -> dict[str, bytes]:
    """Two clients talking through the broker, at each level and QoS."""
    out = {}
    for level in (3, 4, 5):
        for qos in (0, 1, 2):
            sub = Subscribe(1, (("a/+", SubOptions(qos)),))
            pub = Publish("a/b", b"hello", qos, False, False, 7 if qos else None)
            acks: list[tuple[int, bytes]] = []
            if qos == 1:
                acks = [(0, encode(PubAck(1), level))]
            elif qos == 2:
                acks = [(1, encode(PubRel(7), level)), (0, encode(PubRec(1), level)),
                        (0, encode(PubComp(1), level))]
            out[f"conversation_level{level}_qos{qos}"] = steps(
                (0, connect("s", level, clean=False)), (0, encode(sub, level)),
                (1, connect("p", level)), (1, encode(pub, level)), *acks,
                (0, encode(Unsubscribe(2, ("a/+",)), level)), (0, b"\xe0\x00"))
    return out


def _name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:80]


def main() -> None:
    corpora: dict[str, dict[str, bytes]] = {"decoder": {}, "ws_frames": {}, "protocol": {}}
    for name, wire, level, server_side in catalogue():
        if len(wire) > MAX_SEED:
            continue  # past what the fuzzer's inputs grow to (libFuzzer's -max_len)
        config = {3: 0, 4: 1, 5: 2}[level] | (0 if server_side else 4)
        corpora["decoder"][name] = bytes((config,)) + wire
        corpora["ws_frames"][name] = b"\x80" + ws_frame(2, wire)
        if server_side:
            corpora["protocol"][name] = steps((0, connect("c", level)), (0, wire))
    ws = corpora["ws_frames"]
    ws["ping_then_binary"] = b"\x40" + ws_frame(9, b"hi") + ws_frame(2, b"\xc0\x00")
    ws["fragmented_binary"] = b"\x80" + ws_frame(2, b"\x10\x0c", fin=False) + ws_frame(
        0, bytes.fromhex("00044d5154540402003c0000"))
    ws["text_frame"] = b"\x10" + ws_frame(1, b"not binary")
    ws["close_frame"] = b"\xff" + ws_frame(8, b"\x03\xe8")
    ws["unmasked_binary"] = b"\x20" + bytes((0x82, 2)) + b"\xc0\x00"
    ws["length_126"] = b"\x60" + ws_frame(2, encode(Publish("t", b"x" * 200, 0), 4))
    corpora["protocol"].update(conversations())
    for target, seeds in corpora.items():
        folder = CORPUS / target
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            if not old.name.startswith("regress_"):  # inputs that found a bug stay
                old.unlink()
        for name, data in seeds.items():
            (folder / _name(name)).write_bytes(data)
        print(f"{target}: {len(seeds)} seeds")


if __name__ == "__main__":
    main()

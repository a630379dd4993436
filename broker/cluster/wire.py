"""What one node tells another over Redis pub/sub, as bytes: pure, no I/O.

Messages travel as the store's own `MessageStored` record (store/record_codec.py), so a
forwarded message keeps its MQTT 5 properties, its publisher (no local) and its arrival time
(message expiry) exactly as the journal would.
"""

from __future__ import annotations

from ..core.message import Message
from ..store.record_codec import decode_record, encode_record
from ..store.records import MessageQueued, MessageStored, Record

FORWARD = 0x4D  # b"M": a message published on another node, for this node's live clients
OWED = 0x51  # b"Q": a message appended to the queue of a session this node owns
KICK = 0x4B  # b"K": another node took a session of this node's
LATE = 0x4C  # b"L": a forward sent after the fact: the route came after the message
RELEASE = 0x52  # b"R": a node about to claim a session asks its owner to let go of it first
RELEASED = 0x44  # b"D": the owner let go, and everything it wrote for the session is in


def message_record(message: Message) -> bytes:
    return encode_record(message.record())


def message_from(record: MessageStored | MessageQueued) -> Message:
    message = Message(record.topic, record.payload, record.qos, record.retain,
                      record.properties, record.origin, record.msg_id, record.received_at)
    message.stored = True
    return message


def forward(message: Message) -> bytes:
    return bytes((FORWARD,)) + message_record(message)


def late(message: Message, appended: frozenset[str]) -> bytes:
    """A forward for a node whose new subscription the publishing node learnt of only after
    routing the message, with the sessions it appended it for (they have it already)."""
    ids = "\0".join(sorted(appended)).encode()
    return b"%c%d:%s%s" % (LATE, len(ids), ids, message_record(message))


def parse_late(data: bytes) -> tuple[frozenset[str], bytes]:
    colon = data.index(b":")
    size = int(data[1:colon])
    ids = data[colon + 1:colon + 1 + size].decode()
    return frozenset(ids.split("\0")) if ids else frozenset(), data[colon + 1 + size:]


def owed(client_id: str, pos: int, record: bytes) -> bytes:
    return b"%c%d:%s\0%s" % (OWED, pos, client_id.encode(), record)


def kick(client_id: str, epoch: int) -> bytes:
    return b"%c%d:%s" % (KICK, epoch, client_id.encode())


def parse_owed(data: bytes) -> tuple[str, int, MessageQueued]:
    colon = data.index(b":")
    nul = data.index(b"\0", colon)
    record = decode_record(data[nul + 1:])
    if not isinstance(record, MessageQueued):
        raise ValueError(f"a queue notification carries a {type(record).__name__}")
    return data[colon + 1:nul].decode(), int(data[1:colon]), record


def release(requester: str, client_id: str) -> bytes:
    return b"%c%s\0%s" % (RELEASE, requester.encode(), client_id.encode())


def released(client_id: str) -> bytes:
    return b"%c%s" % (RELEASED, client_id.encode())


def parse_release(data: bytes) -> tuple[str, str]:
    requester, _, client_id = data[1:].partition(b"\0")
    return requester.decode(), client_id.decode()


def parse_kick(data: bytes) -> tuple[str, int]:
    colon = data.index(b":")
    return data[colon + 1:].decode(), int(data[1:colon])


def pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    """A hash as Redis answers HGETALL/HSCAN (field, value, field, value, ...) as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def log_entry(entry: bytes) -> tuple[int, bool, Record]:
    """One entry of a session's log: its position, whether a publisher elsewhere appended it
    (not the owner), and the record."""
    colon = entry.index(b":")
    return int(entry[:colon]), entry[colon + 1] == 0x46, decode_record(entry[colon + 2:])

"""Salvage: read a damaged journal past its damage, and say what was lost in the user's terms.

`resync` walks the frames; at damage it resynchronises on the next intact frame (a length
that fits, a matching CRC, a body that decodes) and goes on, so every intact record after
the damage is kept, not only those before it. A damaged stretch whose first frame has a
bad length but a body that still matches its CRC is a flipped length bit: that record is
recovered whole. Otherwise the stretch is lost; if its first frame still decodes, that is
shown as what it probably was (its CRC failed, so it is never kept).

`losses` then reads the records kept for what they prove is missing: a session whose
opening was lost (its later records cannot be used), messages owed to a session whose
bytes were lost, messages sent and not yet acknowledged whose queued record was lost, and
retained topics whose message was lost. Pure: bytes in, facts out.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field

from .base import StoredState
from .record_codec import FRAME_HEADER, RECORD_TYPES, CorruptRecord, decode_record, encode_frame
from .records import (
    MessageQueued,
    MessageStored,
    OutgoingDone,
    OutgoingSent,
    OutgoingStored,
    Record,
    RetainedCleared,
    RetainedSet,
    SessionDeleted,
    SessionOpened,
    Subscribed,
)


@dataclass
class Damage:
    """A stretch of bytes that is not intact frames."""

    start: int
    end: int
    reason: str
    recovered: Record | None = None  # the record, whole: only its length field was damaged
    probably: list[Record] = field(default_factory=list)  # what its frames decode to, CRC failing
    torn: bool = False  # the end of the file, cut short by a crash mid-write: never acknowledged


@dataclass
class Resynced:
    """What `resync` found: the intact frames in order (raw bytes, re-framed for a recovered
    record) with their records, and each damaged stretch."""

    frames: list[bytes] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    damage: list[Damage] = field(default_factory=list)
    after_damage: int = 0  # records kept that come after the first damage


def resync(data: bytes, start: int) -> Resynced:
    """Every intact frame from `start` on, resynchronising on the next one after damage."""
    out = Resynced()
    header_size = FRAME_HEADER.size
    size = len(data)
    pos = start
    while pos < size:
        frame = _intact_at(data, pos)
        if frame is not None:
            end, record = frame
            out.frames.append(data[pos:end])
            out.records.append(record)
            out.after_damage += 1 if out.damage else 0
            pos = end
            continue
        following = next_intact_frame(data, pos + 1)
        end = size if following is None else following
        damage = Damage(pos, end, _why(data, pos))
        damage.torn = following is None and end - pos <= header_size
        if end - pos > header_size:
            length, crc = FRAME_HEADER.unpack_from(data, pos)
            # The last frame, reaching the end of the file or past it: a crash mid-write.
            damage.torn = following is None and pos + header_size + length >= size
            body = data[pos + header_size:end]
            damage.recovered = _decodes(body) if zlib.crc32(body) == crc else None
            if damage.recovered is None:
                damage.probably = _guesses(data, pos, end)
        if damage.recovered is not None:
            out.frames.append(encode_frame(damage.recovered))
            out.records.append(damage.recovered)
            out.after_damage += 1
        out.damage.append(damage)
        pos = end
    return out


# A byte that can begin a record body: where an intact frame's body may start.
_TYPE_BYTE = re.compile(b"[" + b"".join(re.escape(bytes((t,))) for t in sorted(RECORD_TYPES))
                        + b"]")


def next_intact_frame(data: bytes, start: int) -> int | None:
    """The offset of the first intact frame at or after `start` (its length fits in the
    file, its CRC matches, its body decodes), or None. Only bytes that can begin a body
    are tried, so the search runs at C speed over bytes that cannot."""
    header_size = FRAME_HEADER.size
    size = len(data)
    for match in _TYPE_BYTE.finditer(data, start + header_size):
        body = match.start()
        pos = body - header_size
        length, crc = FRAME_HEADER.unpack_from(data, pos)
        end = body + length
        if end > size or not _plausible(data, body, end):
            continue
        if zlib.crc32(data[body:end]) == crc and _decodes(data[body:end]) is not None:
            return pos
    return None


# type byte -> how many u64 fields come before its first string (a client id or topic).
_LEADING_INTS = {t: kinds.index("str") for t, (_cls, kinds) in RECORD_TYPES.items()}


def _plausible(data: bytes, body: int, end: int) -> bool:
    """A cheap look before the CRC: the body's first string fits and is UTF-8. Random bytes
    almost never pass, so a search through a large payload (a torn 50 MiB PUBLISH) does not
    compute a CRC over megabytes at every byte that merely looks like a type byte."""
    at = body + 1 + 8 * _LEADING_INTS[data[body]]
    if at + 2 > end:
        return False
    text_end = at + 2 + ((data[at] << 8) | data[at + 1])
    if text_end > end:
        return False
    try:
        data[at + 2:text_end].decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _guesses(data: bytes, pos: int, end: int) -> list[Record]:
    """What the frames of a damaged stretch decode to, as long as their lengths chain."""
    header_size = FRAME_HEADER.size
    found = []
    while pos + header_size < end:
        length = FRAME_HEADER.unpack_from(data, pos)[0]
        if pos + header_size + length > end:
            break
        record = _decodes(data[pos + header_size:pos + header_size + length])
        if record is not None:
            found.append(record)
        pos += header_size + length
    return found


def _intact_at(data: bytes, pos: int) -> tuple[int, Record] | None:
    header_size = FRAME_HEADER.size
    if pos + header_size > len(data):
        return None
    length, crc = FRAME_HEADER.unpack_from(data, pos)
    end = pos + header_size + length
    if end > len(data) or zlib.crc32(data[pos + header_size:end]) != crc:
        return None
    record = _decodes(data[pos + header_size:end])
    return None if record is None else (end, record)


def _why(data: bytes, pos: int) -> str:
    if pos + FRAME_HEADER.size > len(data):
        return "a frame header cut short"  # only ever at the end
    length = FRAME_HEADER.unpack_from(data, pos)[0]
    if pos + FRAME_HEADER.size + length > len(data):
        return f"frame length {length} runs past the end of the file"
    return "bad CRC or a record this version cannot read"


def _decodes(body: bytes) -> Record | None:
    try:
        return decode_record(body)
    except CorruptRecord:
        return None


@dataclass
class Losses:
    """What the kept records prove was lost, per session and retained topic."""

    # client id -> [subscriptions, messages, other records] that cannot be used any more
    sessions_gone: dict[str, list[int]] = field(default_factory=dict)
    messages_lost: dict[str, int] = field(default_factory=dict)  # client id -> messages owed
    retained_lost: list[str] = field(default_factory=list)  # topics

    def lines(self) -> list[str]:
        out = [f"session {cid}: its start was lost, so what came after it is lost too: "
               f"{subs} subscription(s), {msgs} message(s) owed to it, {other} other "
               "record(s); the client will find no session (session present 0)"
               for cid, (subs, msgs, other) in sorted(self.sessions_gone.items())]
        out += [f"session {cid}: {n} message(s) it was owed are lost"
                for cid, n in sorted(self.messages_lost.items())]
        out += [f"retained topic {topic}: its message is lost (no retained message now)"
                for topic in sorted(self.retained_lost)]
        return out


def losses(records: list[Record]) -> Losses:
    """Fold the kept records as a restart would, noting every reference to what is missing."""
    state = StoredState()
    found = Losses()
    deleted: set[str] = set()
    unacked_unknown: dict[str, dict[int, int]] = {}  # client -> packet id -> msg id
    for record in records:
        client_id = getattr(record, "client_id", None)
        if isinstance(record, SessionOpened):
            deleted.discard(record.client_id)
        elif isinstance(record, SessionDeleted):
            deleted.add(record.client_id)
            unacked_unknown.pop(record.client_id, None)
        elif client_id is not None and client_id not in state.sessions \
                and client_id not in deleted:
            # Records about a session never opened: its SessionOpened was in the damage.
            counts = found.sessions_gone.setdefault(client_id, [0, 0, 0])
            kind = 0 if isinstance(record, Subscribed) else \
                1 if isinstance(record, MessageQueued | OutgoingStored) else 2
            counts[kind] += 1
        session = state.sessions.get(client_id) if client_id is not None else None
        if isinstance(record, OutgoingSent) and session is not None \
                and record.msg_id not in session._queued:
            # Sent, but its queued record is gone: owed until an OutgoingDone says otherwise.
            unacked_unknown.setdefault(record.client_id, {})[record.packet_id] = record.msg_id
        elif isinstance(record, OutgoingDone):
            unacked_unknown.get(record.client_id, {}).pop(record.packet_id, None)
        state.apply(record)
    for session in state.sessions.values():
        missing = sum(1 for entry in session.outgoing.values()
                      if entry.msg_id not in state.messages)
        missing += len(unacked_unknown.get(session.client_id, {}))
        if missing:
            found.messages_lost[session.client_id] = missing
    found.retained_lost = [topic for topic, msg_id in state.retained.items()
                           if msg_id not in state.messages]
    return found


def describe(record: Record) -> str:
    """A lost record in words, for the salvage report."""
    match record:
        case MessageQueued():
            return f"a message on {record.topic!r} queued for session {record.client_id}"
        case MessageStored():
            return f"a message on {record.topic!r}"
        case OutgoingStored():
            return f"a message owed to session {record.client_id}"
        case SessionOpened():
            return f"the start of session {record.client_id}"
        case RetainedSet() | RetainedCleared():
            return f"the retained message of {record.topic!r}"
        case _:
            who = getattr(record, "client_id", None)
            return type(record).__name__ + (f" of session {who}" if who else "")

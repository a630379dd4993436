"""Folding a journal's frames into `StoredState` as they are read, without a record per frame.

A restart reads a journal that is mostly `MessageQueued` frames (a message queued for an
offline session) and, from live traffic, `OutgoingSent` and `OutgoingDone`. Decoding each
frame into a record and folding the list (`restore(scan_journal(...).records)`) built two
objects per message that lived only for the fold, held the whole list at once (the largest
part of a restart's memory peak), and decoded the same client id, topic and origin once per
message into strings of their own.

`JournalFold` takes each frame's body as `scan_journal` reads it (`consume`): those three
kinds are folded straight from the bytes (a `MessageQueued` without MQTT 5 extras becomes its
`MessageStored` and `StoredOutgoing`, nothing else), their strings decoded once per distinct
value and shared; every other body goes through `decode_record` and `StoredState.apply`, as
`restore` folds it. `finish()` drops the unreferenced messages as `restore` does, so the state
is the one `restore` folds from the same records (tests/unit/test_journal_fold.py), and a body
this reads differently from `decode_record` raises the same `CorruptRecord`.
"""

from __future__ import annotations

import struct

from .base import StoredOutgoing, StoredState
from .record_codec import CorruptRecord, decode_record
from .records import MessageStored

_Q = struct.Struct(">Q").unpack_from
_H = struct.Struct(">H").unpack_from
_I = struct.Struct(">I").unpack_from
_B_BOOL_Q = struct.Struct(">B?Q").unpack_from
_QQ = struct.Struct(">QQ").unpack_from

# Distinct strings kept for sharing: client ids and topics recur, but a journal of
# per-device topics must not grow this without bound.
_STRINGS_MAX = 65_536

_MESSAGE_QUEUED = 15
_OUTGOING_SENT = 8
_OUTGOING_DONE = 10


class JournalFold:
    """A `StoredState` built one frame body at a time (`consume`), then `finish()`."""

    def __init__(self) -> None:
        self.state = StoredState()
        self.records = 0
        self._strings: dict[bytes, str] = {}

    def _str(self, raw: bytes) -> str:
        text = self._strings.get(raw)
        if text is None:
            text = raw.decode("utf-8")
            if len(self._strings) >= _STRINGS_MAX:
                self._strings.clear()
            self._strings[raw] = text
        return text

    def consume(self, body: bytes) -> None:
        """Fold one frame's body; `CorruptRecord` for bytes that are not a record."""
        self.records += 1
        kind = body[0] if body else -1
        try:
            if kind == _MESSAGE_QUEUED and self._queued(body):
                return
            if kind in (_OUTGOING_DONE, _OUTGOING_SENT):
                self._outgoing(body, kind)
                return
        except (struct.error, IndexError, UnicodeDecodeError) as exc:
            raise CorruptRecord(f"record type {kind}: {exc}") from None
        self.state.apply(decode_record(body))

    def _queued(self, body: bytes) -> bool:
        """A `MessageQueued` of row 15 (no arrival time, no subscription ids); False, having
        changed nothing, for one with MQTT 5 properties, which the generic path reads."""
        # type | msg id u64 | topic | payload u32+bytes | qos | retain | origin | props |
        # client id | out qos | out retain | packet id u64
        pos = 11 + _H(body, 9)[0]
        topic_raw = body[11:pos]
        end = pos + 4 + _I(body, pos)[0]
        payload = body[pos + 4:end]
        qos, retain = body[end], body[end + 1]
        pos = end + 4 + _H(body, end + 2)[0]
        origin_raw = body[end + 4:pos]
        if body[pos] != 0:
            return False
        end = pos + 3 + _H(body, pos + 1)[0]
        client_raw = body[pos + 3:end]
        out_qos, out_retain, packet_id = _B_BOOL_Q(body, end)
        if end + 10 != len(body):
            raise CorruptRecord(f"MessageQueued: {len(body) - end - 10} unexpected bytes at "
                                "the end")
        strings = self._strings
        topic = strings.get(topic_raw) or self._str(topic_raw)
        origin = strings.get(origin_raw) or self._str(origin_raw)
        client_id = strings.get(client_raw) or self._str(client_raw)
        msg_id = _Q(body, 1)[0]
        state = self.state
        # What `StoredState.apply` does with a `MessageQueued`, without the record.
        state.messages[msg_id] = MessageStored(msg_id, topic, payload, qos, bool(retain),
                                               origin)
        if msg_id > state.max_msg_id:
            state.max_msg_id = msg_id
        session = state.sessions.get(client_id)
        if session is not None:
            session.add_outgoing(StoredOutgoing(msg_id, out_qos, out_retain, packet_id))
        return True

    def _outgoing(self, body: bytes, kind: int) -> None:
        end = 3 + _H(body, 1)[0]
        size = 16 if kind == _OUTGOING_SENT else 8
        if end + size != len(body):
            raise CorruptRecord(f"record type {kind}: {len(body) - end - size} unexpected "
                                "bytes at the end")
        client_raw = body[3:end]
        client_id = self._strings.get(client_raw) or self._str(client_raw)
        session = self.state.sessions.get(client_id)
        if kind == _OUTGOING_DONE:
            packet_id = _Q(body, end)[0]
            if session is not None:
                session.mark_done(packet_id)
        else:
            msg_id, packet_id = _QQ(body, end)
            if session is not None:
                session.mark_sent(msg_id, packet_id)

    def finish(self) -> StoredState:
        """The state, once every body was consumed (what `restore` returns)."""
        self.state.drop_unreferenced()
        self._strings.clear()
        return self.state

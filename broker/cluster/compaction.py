"""A session's log in Redis rewritten as its snapshot, so that it stays about as long as what
the session holds (the journal's compaction, one session at a time).

The owner reads the log, folds it (`store.base.restore`, the journal's own pure fold) and
writes back the shortest records that restore the same state, each message whole, in place
of every entry up to the last position it read. Entries appended after that read (by the
owner or by publishers on other nodes) stay behind the snapshot; the script refuses if the
session moved to another owner meanwhile. Working from the log rather than from memory
makes the snapshot exact whatever writes are still in flight.
"""

from __future__ import annotations

from ..store.base import restore, snapshot
from ..store.record_codec import encode_record
from ..store.records import MessageQueued, MessageStored, OutgoingStored, Record
from .wire import log_entry

COMPACT_AFTER = 500  # entries written since the last compaction, at least


def due(held: int, written: int) -> bool:
    """Worth it: more entries were written since the last time than the session holds."""
    return written >= max(COMPACT_AFTER, 2 * held)


def compacted(entries: list[bytes]) -> tuple[int, list[bytes]]:
    """(the last position folded, the snapshot's entries) for a session's log."""
    records: list[Record] = []
    last = 0
    for entry in entries:
        pos, _foreign, record = log_entry(entry)
        records.append(record)
        last = max(last, pos)
    state = restore(records)
    out: list[bytes] = []
    for record in snapshot(state):
        if isinstance(record, MessageStored):
            continue  # written whole with each session entry below
        if isinstance(record, OutgoingStored):
            m = state.messages[record.msg_id]
            record = MessageQueued(m.msg_id, m.topic, m.payload, m.qos, m.retain, m.origin,
                                   m.properties, record.client_id, record.qos, record.retain,
                                   record.packet_id, m.received_at, record.sub_ids)
        out.append(encode_record(record))
    return last, out

"""`JournalFold`: a journal folded frame by frame at start-up is the state `restore()` folds
from the same records, reads what `decode_record` refuses as damage, and shares the strings
its messages repeat."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given
from test_journal import ONE_OF_EACH
from test_store import LOGS, logs, view

from broker.codec.properties import NO_PROPERTIES
from broker.server.journal_writer import JournalStore
from broker.store.base import restore
from broker.store.journal_file import HEADER, JOURNAL_NAME, JournalCorrupt, scan_journal
from broker.store.journal_fold import JournalFold
from broker.store.record_codec import CorruptRecord, encode_frame, encode_record
from broker.store.records import (
    MessageQueued,
    OutgoingDone,
    OutgoingSent,
    SessionClosed,
    SessionOpened,
    Subscribed,
)


def folded(records):
    fold = JournalFold()
    for record in records:
        fold.consume(encode_record(record))
    return fold.finish()


def test_one_record_of_each_type_folds_as_restore_does():
    assert folded(ONE_OF_EACH) == restore(ONE_OF_EACH)
    assert view(folded(ONE_OF_EACH)) == view(restore(ONE_OF_EACH))


@LOGS
@given(records=logs)
def test_any_valid_log_folds_as_restore_does(records):
    state = folded(records)
    assert state == restore(records)
    assert view(state) == view(restore(records))
    assert state.max_msg_id == restore(records).max_msg_id


def queued(msg_id, client_id="dev", topic="t/1", origin="pub"):
    return MessageQueued(msg_id, topic, b"payload", 1, False, origin, NO_PROPERTIES, client_id,
                         1, False, 0)


def test_messages_of_a_session_share_their_topic_origin_and_client_id_strings():
    records = [SessionOpened("dev", 4, 0), Subscribed("dev", "t/#", 1),
               queued(1), queued(2), SessionClosed("dev", 5.0)]
    state = folded(records)
    first, second = state.messages[1], state.messages[2]
    assert first.topic is second.topic and first.origin is second.origin
    assert state == restore(records)


def test_sent_and_done_move_and_end_a_queued_entry_as_restore_does():
    records = [SessionOpened("dev", 4, 0), queued(1), queued(2), OutgoingSent("dev", 1, 7),
               OutgoingDone("dev", 7), OutgoingSent("dev", 2, 8), OutgoingDone("gone", 8)]
    state = folded(records)
    assert [(e.msg_id, e.packet_id) for e in state.sessions["dev"].outgoing.values()] == [(2, 8)]
    assert state == restore(records)


@pytest.mark.parametrize("record", [queued(1), OutgoingDone("dev", 7), OutgoingSent("dev", 1, 7)])
def test_a_body_cut_short_or_with_bytes_left_over_is_corrupt(record):
    body = encode_record(record)
    for bad in (body[:-1], body + b"\x00", body[:12]):
        with pytest.raises(CorruptRecord):
            JournalFold().consume(bad)


def test_bad_utf8_in_a_queued_message_is_corrupt():
    body = encode_record(queued(1, topic="t/é"))
    bad = body.replace("é".encode(), b"\xff\xfe")
    with pytest.raises(CorruptRecord):
        JournalFold().consume(bad)


def test_start_up_refuses_a_journal_whose_queued_message_frame_is_damaged(tmp_path):
    # A frame with a valid CRC whose body is not a record: damage, never a silent skip.
    good = encode_frame(SessionOpened("dev", 4, 0))
    bad = encode_frame(queued(1))
    body = bad[8:-1]  # one byte short, framed again with its own CRC
    reframed = len(body).to_bytes(4, "big") + zlib.crc32(body).to_bytes(4, "big") + body
    (tmp_path / JOURNAL_NAME).write_bytes(HEADER + good + reframed + good)
    store = JournalStore(str(tmp_path), fsync="never")
    with pytest.raises(JournalCorrupt) as caught:
        store.load()
    assert caught.value.offset == len(HEADER) + len(good)
    assert scan_journal(str(tmp_path / JOURNAL_NAME)).damage[0] == caught.value.offset


def test_start_up_folds_a_journal_to_what_restore_folds_from_its_records(tmp_path):
    records = [*ONE_OF_EACH, SessionOpened("dev", 4, 0),
               *(queued(n, "dev", f"t/{n % 3}") for n in range(10, 40)),
               OutgoingSent("dev", 10, 1), OutgoingDone("dev", 1)]
    (tmp_path / JOURNAL_NAME).write_bytes(HEADER + b"".join(map(encode_frame, records)))
    store = JournalStore(str(tmp_path), fsync="never")
    try:
        state = store.load()
    finally:
        store.close()
    assert state == restore(records)
    assert store.new_message_id() == 40

"""The journal on disk: the record codec, torn tails, damage in the middle, salvage, and
compaction, with a real file and the real writer greenlet (no broker process needed)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys

import gevent
import pytest

from broker.codec.properties import NO_PROPERTIES
from broker.server.journal_writer import JournalStore
from broker.store.base import restore, snapshot
from broker.store.journal_file import HEADER, JOURNAL_NAME, JournalCorrupt, scan_journal
from broker.store.record_codec import (
    RECORD_TYPES,
    CorruptRecord,
    decode_record,
    encode_frame,
    encode_record,
)
from broker.store.records import (
    IncomingQos2,
    IncomingReleased,
    MessageQueued,
    MessageStored,
    OutgoingDone,
    OutgoingReleased,
    OutgoingSent,
    OutgoingStored,
    OutgoingWithdrawn,
    RetainedCleared,
    RetainedSet,
    SessionClosed,
    SessionDeleted,
    SessionOpened,
    Subscribed,
    Unsubscribed,
)

ONE_OF_EACH = [
    SessionOpened("dev/1", 4, 3600),
    Subscribed("dev/1", "a/+/#", 0x01),
    MessageStored(1, "a/b/c", b"\x00\xff payload", 1, False, "pub-ü", NO_PROPERTIES),
    MessageStored(2, "a/b/d", b"", 2, True, "", {"content_type": "text/plain",
                                                  "user_property": [("k", "v")]}),
    OutgoingStored("dev/1", 1, 1, False, 0),
    MessageQueued(3, "a/q", b"\x00queued", 2, False, "pub", NO_PROPERTIES, "dev/1", 1, False, 5),
    MessageQueued(4, "a/é", b"", 1, True, "", {"user_property": [("k", "v")]}, "dev/1", 1, True,
                  0),
    OutgoingSent("dev/1", 1, 7),
    OutgoingStored("dev/1", 2, 2, True, 8),
    OutgoingReleased("dev/1", 8),
    OutgoingDone("dev/1", 7),
    OutgoingWithdrawn("dev/1", 3),
    IncomingQos2("dev/1", 99),
    IncomingReleased("dev/1", 99),
    RetainedSet("a/b/d", 2),
    RetainedCleared("gone"),
    Unsubscribed("dev/1", "x"),
    Subscribed("dev/1", "v5/#", 0x2e, 268_435_455),  # an MQTT 5 one, with an identifier
    SessionClosed("dev/1", 1764100000.25),
    SessionDeleted("old"),
]


def test_every_record_type_round_trips_through_the_codec():
    assert {type(r) for r in ONE_OF_EACH} == {cls for cls, _ in RECORD_TYPES.values()}
    for record in ONE_OF_EACH:
        assert decode_record(encode_record(record)) == record


def test_record_bytes_are_stable_on_disk():
    # The format is a promise to old journals: this exact byte string must keep decoding.
    assert encode_record(OutgoingSent("c", 5, 9)).hex() == \
        "08" "0001" "63" "0000000000000005" "0000000000000009"
    assert encode_record(MessageQueued(5, "t", b"p", 1, False, "o", NO_PROPERTIES, "c", 1, True,
                                       9)).hex() == \
        "0f" "0000000000000005" "0001" "74" "00000001" "70" "01" "00" "0001" "6f" "00" \
        "0001" "63" "01" "01" "0000000000000009"
    # A subscription without an identifier is written as before MQTT 5 subscriptions, and
    # what older versions wrote reads back with none; one with an identifier is row 16.
    assert encode_record(Subscribed("c", "t", 0x01)).hex() == "04" "0001" "63" "0001" "74" "01"
    assert decode_record(bytes.fromhex("04" "0001" "63" "0001" "74" "01")) == \
        Subscribed("c", "t", 1, 0)
    assert encode_record(Subscribed("c", "t", 0x05, 7)).hex() == \
        "10" "0001" "63" "0001" "74" "05" "0000000000000007"
    assert encode_record(OutgoingWithdrawn("c", 5)).hex() == "11" "0001" "63" "0000000000000005"


@pytest.mark.parametrize("body", [b"", b"\xee", encode_record(SessionDeleted("abc"))[:-1],
                                  encode_record(SessionDeleted("abc")) + b"\x00",
                                  b"\x03\x00\x02\xc0\x80"])
def test_bad_record_bodies_raise_corrupt_record(body):
    with pytest.raises(CorruptRecord):
        decode_record(body)


def _write_journal(path, records, tail=b""):
    with open(path, "wb") as fh:
        fh.write(HEADER + b"".join(encode_frame(r) for r in records) + tail)


def _load(data_dir, **kwargs) -> tuple[JournalStore, object]:
    store = JournalStore(str(data_dir), **kwargs)
    return store, store.load()


def test_torn_final_frame_is_truncated_and_the_rest_restored(tmp_path):
    path = tmp_path / JOURNAL_NAME
    whole = ONE_OF_EACH[:5]
    torn = encode_frame(OutgoingSent("dev/1", 1, 7))[:-3]
    _write_journal(path, whole, torn)
    store, state = _load(tmp_path)
    assert state.sessions["dev/1"].subscriptions == {"a/+/#": 1}
    assert os.path.getsize(path) == len(HEADER) + sum(len(encode_frame(r)) for r in whole)
    store.close()


def test_torn_frame_header_and_torn_file_header_are_recovered(tmp_path):
    path = tmp_path / JOURNAL_NAME
    _write_journal(path, ONE_OF_EACH[:1], b"\x00\x00\x00")
    store, state = _load(tmp_path)
    assert list(state.sessions) == ["dev/1"]
    store.close()
    path.write_bytes(HEADER[:7])  # the crash hit while the header itself was written
    store, state = _load(tmp_path)
    assert state.sessions == {} and path.read_bytes() == HEADER
    store.close()


def test_bad_crc_in_the_middle_stops_start_up_naming_the_offset(tmp_path):
    path = tmp_path / JOURNAL_NAME
    _write_journal(path, ONE_OF_EACH[:4])
    data = bytearray(path.read_bytes())
    second = len(HEADER) + len(encode_frame(ONE_OF_EACH[0]))
    data[second + 9] ^= 0xFF  # a flipped bit inside the second record's body
    path.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt) as caught:
        JournalStore(str(tmp_path)).load()
    assert caught.value.offset == second and caught.value.reason == "bad CRC"
    assert path.read_bytes() == bytes(data)  # nothing was changed


def test_unknown_record_type_in_the_middle_is_damage(tmp_path):
    path = tmp_path / JOURNAL_NAME
    body = b"\xee\x00"
    frame = struct.pack(">II", len(body), __import__("zlib").crc32(body)) + body
    _write_journal(path, ONE_OF_EACH[:1])
    path.write_bytes(path.read_bytes() + frame + encode_frame(ONE_OF_EACH[1]))
    found = scan_journal(str(path))
    assert found.damage == (len(HEADER) + len(encode_frame(ONE_OF_EACH[0])),
                            "unknown record type 238")


def test_salvage_keeps_every_intact_record_around_the_damage_and_saves_the_original(tmp_path):
    path = tmp_path / JOURNAL_NAME
    _write_journal(path, ONE_OF_EACH[:6])
    original = path.read_bytes()
    damage_at = len(HEADER) + sum(len(encode_frame(r)) for r in ONE_OF_EACH[:3])
    path.write_bytes(original[:damage_at + 5] + b"\xff" + original[damage_at + 6:])
    result = subprocess.run([sys.executable, "-m", "broker", "inspect", "-d", str(tmp_path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and f"DAMAGED at offset {damage_at}" in result.stdout
    config = tmp_path / "g.toml"
    config.write_text(f'[broker]\ndata_dir = "{tmp_path}"\n')
    result = subprocess.run([sys.executable, "-m", "broker", "check", "--salvage", "-c",
                             str(config)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert f"offset {damage_at} (bad CRC" in result.stderr
    assert "kept 5 intact record(s), 2 of them after the damage" in result.stderr
    backups = [p for p in tmp_path.iterdir() if ".damaged-" in p.name]
    assert len(backups) == 1 and backups[0].read_bytes()[:damage_at] == original[:damage_at]
    store, state = _load(tmp_path)
    assert state == restore(ONE_OF_EACH[:3] + ONE_OF_EACH[4:6])
    store.close()


def test_corrupt_journal_stops_the_broker_with_the_salvage_command(tmp_path):
    (tmp_path / JOURNAL_NAME).write_bytes(b"NOT A JOURNAL AT ALL")
    config = tmp_path / "g.toml"
    config.write_text(f'[broker]\ndata_dir = "{tmp_path}"\n[[listener]]\nport = 0\n')
    result = subprocess.run([sys.executable, "-m", "broker", "-c", str(config)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 3
    assert "is damaged at offset 0 (not a greenfly journal (bad magic))" in result.stderr
    assert f"greenfly check --salvage -c {config}" in result.stderr
    assert "Traceback" not in result.stderr


def test_leftover_compaction_temp_file_is_removed_and_the_journal_kept(tmp_path):
    _write_journal(tmp_path / JOURNAL_NAME, ONE_OF_EACH[:2])
    (tmp_path / (JOURNAL_NAME + ".tmp")).write_bytes(HEADER + b"half a snapsh")
    store, state = _load(tmp_path)
    assert not (tmp_path / (JOURNAL_NAME + ".tmp")).exists()
    assert state.sessions["dev/1"].subscriptions == {"a/+/#": 1}
    store.close()


def test_appended_records_are_durable_after_wait_and_survive_reopening(tmp_path):
    store, _ = _load(tmp_path)
    seqs = [store.append(r) for r in ONE_OF_EACH]
    assert not store.is_durable(seqs[-1])
    store.wait_durable(seqs[-1])
    assert store.is_durable(seqs[-1])
    assert scan_journal(str(tmp_path / JOURNAL_NAME)).records == ONE_OF_EACH
    store.close()
    again, state = _load(tmp_path)
    assert state == restore(ONE_OF_EACH)
    again.close()


def test_concurrent_waiters_share_fsyncs_group_commit(tmp_path):
    store, _ = _load(tmp_path)
    fsyncs = []
    real_fsync = os.fsync

    def counting_fsync(fd):
        fsyncs.append(fd)
        real_fsync(fd)

    os.fsync = counting_fsync
    try:
        def publisher(i):
            for j in range(20):
                store.wait_durable(store.append(SessionOpened(f"c{i}-{j}", 4, 0)))
        gevent.joinall([gevent.spawn(publisher, i) for i in range(50)], timeout=30)
    finally:
        os.fsync = real_fsync
    assert len(scan_journal(str(tmp_path / JOURNAL_NAME)).records) == 1000
    assert len(fsyncs) < 200, f"{len(fsyncs)} fsyncs for 1000 records from 50 greenlets"
    store.close()


def test_on_durable_calls_back_after_the_record_is_on_disk_and_on_a_failed_write(tmp_path):
    store, _ = _load(tmp_path)
    path = str(tmp_path / JOURNAL_NAME)
    seen: list[tuple[str, int, bool, str | None]] = []

    def callback(name, seq):
        def called():
            on_disk = len(scan_journal(path).records)
            seen.append((name, on_disk, store.is_durable(seq), store.failure))
        return called

    first = store.append(ONE_OF_EACH[0])
    store.on_durable(first, callback("first", first))
    assert seen == []  # only appended: nothing may be acknowledged yet
    store.wait_durable(first)
    assert seen == [("first", 1, True, None)]
    store.on_durable(first, callback("again", first))  # durable already: called at once
    assert seen[-1] == ("again", 1, True, None)

    # A write that fails (the journal's descriptor swapped for a read-only one) calls the
    # waiting callbacks with `failure` set and the record not durable.
    writable = store._fd
    store._fd = os.open(path, os.O_RDONLY)
    try:
        second = store.append(ONE_OF_EACH[1])
        store.on_durable(second, callback("failed", second))
        with gevent.Timeout(5):
            while len(seen) < 3:
                gevent.sleep(0.01)
        name, on_disk, durable, failure = seen[-1]
        assert (name, on_disk, durable) == ("failed", 1, False)
        assert "errno" in failure
    finally:
        os.close(store._fd)
        store._fd = writable
    with gevent.Timeout(5):  # the retry (every RETRY_INTERVAL) writes it now
        while not store.is_durable(second):
            gevent.sleep(0.05)
    assert store.failure is None and len(scan_journal(path).records) == 2
    store.close()


def test_compaction_replaces_the_journal_with_a_snapshot_of_the_live_state(tmp_path):
    store = JournalStore(str(tmp_path), compact_min_bytes=2000, compact_factor=2)
    state = store.load()
    live = {"records": []}
    store.snapshot_source = lambda: snapshot(restore(live["records"]))
    for i in range(200):  # churn: each message is queued then done
        batch = [MessageStored(i + 1, "t", b"x" * 50, 1, False),
                 SessionOpened("c", 4, 0), OutgoingStored("c", i + 1, 1, False, 1),
                 OutgoingDone("c", 1)]
        live["records"].extend(batch)
        for record in batch:
            seq = store.append(record)
        store.wait_durable(seq)
    assert store.compactions >= 1
    size = os.path.getsize(tmp_path / JOURNAL_NAME)
    assert size < 2000 * 2 + 1000
    store.close()
    again, state = _load(tmp_path)
    assert state == restore(live["records"])
    again.close()


def test_hand_laid_encoders_write_the_generic_bytes_for_every_hot_record():
    from broker.store.record_codec import _FAST_ENCODERS, _encode_generic

    hot = [r for r in ONE_OF_EACH if type(r) in _FAST_ENCODERS]
    assert {type(r) for r in hot} == set(_FAST_ENCODERS)
    for record in hot:
        assert _FAST_ENCODERS[type(record)](record) == _encode_generic(record), record


def test_hand_laid_encoders_agree_for_long_and_repeated_strings():
    from broker.store.record_codec import _encode_generic

    long_topic = "t/" + "é" * 300  # longer than the encoded-string cache keeps
    for topic in (long_topic, long_topic, "short", "short"):
        record = MessageQueued(9, topic, b"p", 1, False, "o", NO_PROPERTIES, "c", 1, False, 3)
        assert encode_record(record) == _encode_generic(record)
        assert decode_record(encode_record(record)) == record


@pytest.mark.parametrize("record", ONE_OF_EACH, ids=lambda r: type(r).__name__)
def test_every_truncation_or_extension_of_a_record_is_corrupt(record):
    body = encode_record(record)
    for cut in range(len(body)):
        with pytest.raises(CorruptRecord):
            decode_record(body[:cut])
    with pytest.raises(CorruptRecord):
        decode_record(body + b"\x00")

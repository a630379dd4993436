"""Damage in the middle of a journal is never read as a torn tail, nothing is cut without a
copy, and salvage keeps every intact record after the damage. Real files, and the real
broker and `greenfly` commands as subprocesses."""

from __future__ import annotations

import subprocess
import sys

from broker.codec.properties import NO_PROPERTIES
from broker.server.journal_writer import JournalStore
from broker.store.base import restore
from broker.store.journal_file import HEADER, JOURNAL_NAME, scan_journal
from broker.store.record_codec import encode_frame
from broker.store.records import (
    MessageQueued,
    MessageStored,
    OutgoingDone,
    OutgoingSent,
    RetainedSet,
    SessionOpened,
    Subscribed,
)

GREENFLY = [sys.executable, "-m", "broker"]


def _owed(n: int, client: str = "dev/1", first: int = 1) -> list:
    """`n` QoS 1 messages queued for `client`, as a broker writes them."""
    return [MessageQueued(first + i, "a/b", b"payload %d" % (first + i), 1, False, "pub",
                          NO_PROPERTIES, client, 1, False, 0) for i in range(n)]


JOURNAL = [SessionOpened("dev/1", 4, 0), Subscribed("dev/1", "a/#", 1), *_owed(40)]


def _offsets(records: list) -> list[int]:
    """The offset of each record's frame in a journal of `records`."""
    offsets, pos = [], len(HEADER)
    for record in records:
        offsets.append(pos)
        pos += len(encode_frame(record))
    return offsets


def _write(path, records, tail: bytes = b"") -> bytes:
    data = HEADER + b"".join(encode_frame(r) for r in records) + tail
    path.write_bytes(data)
    return data


def _flip_length_bit(path, offset: int, bit: int = 20) -> bytes:
    data = bytearray(path.read_bytes())
    data[offset + 3 - bit // 8] ^= 1 << (bit % 8)  # the length is big-endian u32
    path.write_bytes(bytes(data))
    return bytes(data)


def _start_broker(tmp_path) -> subprocess.CompletedProcess:
    config = tmp_path / "g.toml"
    config.write_text(f'[broker]\ndata_dir = "{tmp_path}"\n[[listener]]\nport = 0\n')
    proc = subprocess.Popen([*GREENFLY, "-c", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()  # it started: the damage went unseen
        out, err = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_a_flipped_length_bit_mid_journal_is_damage_not_a_torn_tail(tmp_path):
    path = tmp_path / JOURNAL_NAME
    _write(path, JOURNAL)
    victim = _offsets(JOURNAL)[12]  # 30 acknowledged records follow it
    damaged = _flip_length_bit(path, victim)  # its length now runs past the end of the file
    result = _start_broker(tmp_path)
    assert result.returncode == 3, result.stderr
    assert f"the session journal {path} is damaged at offset {victim}" in result.stderr
    assert "an intact record follows" in result.stderr
    assert path.read_bytes() == damaged  # nothing truncated
    assert not list(tmp_path.glob("*.torn-*"))


def test_a_torn_tail_is_truncated_and_the_cut_bytes_are_kept_beside_the_journal(tmp_path):
    path = tmp_path / JOURNAL_NAME
    torn = encode_frame(OutgoingSent("dev/1", 1, 7))[:-3]
    _write(path, JOURNAL, torn)
    store = JournalStore(str(tmp_path))
    state = store.load()
    store.close()
    assert len(state.sessions["dev/1"].outgoing) == 40
    [kept] = tmp_path.glob(f"{JOURNAL_NAME}.torn-*")
    assert kept.read_bytes() == torn
    assert path.read_bytes() == HEADER + b"".join(encode_frame(r) for r in JOURNAL)


def test_a_torn_tail_whose_length_runs_past_the_end_is_still_a_torn_tail(tmp_path):
    # A crash mid-write of a big record: the length is right, the body is cut short, and
    # nothing intact follows, so it is a torn tail, not damage.
    path = tmp_path / JOURNAL_NAME
    torn = encode_frame(_owed(1, first=41)[0])
    _write(path, JOURNAL, torn[:len(torn) // 2])
    found = scan_journal(str(path))
    assert found.damage is None and found.torn_tail == len(torn) // 2
    assert found.good_end == len(HEADER) + sum(len(encode_frame(r)) for r in JOURNAL)


def test_a_flip_in_the_last_frames_length_with_nothing_after_it_is_a_torn_tail(tmp_path):
    path = tmp_path / JOURNAL_NAME
    _write(path, JOURNAL)
    _flip_length_bit(path, _offsets(JOURNAL)[-1])
    found = scan_journal(str(path))
    assert found.damage is None and found.torn_tail == len(encode_frame(JOURNAL[-1]))
    assert len(found.records) == len(JOURNAL) - 1


def test_a_short_ack_record_after_the_flip_is_enough_to_prove_damage(tmp_path):
    # A record that only says "done" is a whole record too: it proves damage before it.
    path = tmp_path / JOURNAL_NAME
    records = [*JOURNAL, OutgoingSent("dev/1", 1, 1), OutgoingDone("dev/1", 1)]
    _write(path, records)
    _flip_length_bit(path, _offsets(records)[-2])
    found = scan_journal(str(path))
    assert found.damage is not None and found.damage[0] == _offsets(records)[-2]


# -- salvage -------------------------------------------------------------------------------

def _salvage(tmp_path) -> subprocess.CompletedProcess:
    config = tmp_path / "g.toml"
    config.write_text(f'[broker]\ndata_dir = "{tmp_path}"\n')
    return subprocess.run([*GREENFLY, "check", "--salvage", "-c", str(config)],
                          capture_output=True, text=True, timeout=30)


def _restored(tmp_path):
    store = JournalStore(str(tmp_path))
    state = store.load()
    store.close()
    return state


def test_salvage_recovers_a_record_whose_length_bit_flipped_and_keeps_all_after_it(tmp_path):
    path = tmp_path / JOURNAL_NAME
    original = _write(path, JOURNAL)
    victim = _offsets(JOURNAL)[12]
    _flip_length_bit(path, victim)
    result = _salvage(tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"offset {victim} (frame length" in result.stderr
    assert "only the length field was damaged; the record itself is intact" in result.stderr
    assert f"kept {len(JOURNAL)} intact record(s), 30 of them after the damage" in result.stderr
    assert "nothing acknowledged was lost" in result.stderr
    assert path.read_bytes() == original  # the record re-framed: the journal as it was
    [backup] = tmp_path.glob(f"{JOURNAL_NAME}.damaged-*")
    assert backup.read_bytes() != original
    assert _restored(tmp_path) == restore(JOURNAL)


def test_salvage_keeps_every_intact_record_after_the_damage_and_names_what_was_lost(tmp_path):
    door = MessageStored(900, "status/door", b"open", 1, True, "pub", NO_PROPERTIES)
    records = [
        SessionOpened("dev/1", 4, 0), Subscribed("dev/1", "a/#", 1), *_owed(10),
        door,                                           # 12: damaged (its RetainedSet is not)
        SessionOpened("dev/2", 4, 0),                   # 13: damaged
        *_owed(10, first=11),
        MessageQueued(30, "a/b", b"lost", 1, False, "pub", NO_PROPERTIES, "dev/1", 1, False, 0),
        Subscribed("dev/2", "b/#", 1), *_owed(3, client="dev/2", first=40),
        RetainedSet("status/door", 900),
        OutgoingSent("dev/1", 30, 7),                   # the damaged message above was sent
        *_owed(5, first=50),
    ]
    path = tmp_path / JOURNAL_NAME
    _write(path, records)
    offsets = _offsets(records)
    data = bytearray(path.read_bytes())
    for index in (12, 13, 24):
        data[offsets[index] + 12] ^= 0x01  # a bit inside the body: the CRC fails
    path.write_bytes(bytes(data))
    result = _salvage(tmp_path)
    assert result.returncode == 0, result.stderr
    report = result.stderr
    survivors = [r for i, r in enumerate(records) if i not in (12, 13, 24)]
    assert f"kept {len(survivors)} intact record(s), {len(survivors) - 12} of them after" in \
        report
    assert "session dev/2: its start was lost, so what came after it is lost too: " \
        "1 subscription(s), 3 message(s) owed to it" in report
    assert "session dev/1: 1 message(s) it was owed are lost" in report
    assert "retained topic status/door: its message is lost" in report
    assert "probably a message on 'a/b' queued for session dev/1" in report
    # The bit flipped inside dev/2's client id: a guess shows the damaged bytes as they are.
    assert "it held, probably, a message on 'status/door'; the start of session d" in report
    state = _restored(tmp_path)
    assert state == restore(survivors)
    assert len(state.sessions["dev/1"].outgoing) == 25  # 10 + 10 + 5: all but the lost one

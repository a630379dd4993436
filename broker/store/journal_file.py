"""The journal file: its header, its frames, and reading it back without a broker.

`greenfly.journal` is a versioned header, then frames `length | crc32 | body` (see
`record_codec`). `scan_journal` reads every record and tells a torn final frame (a crash
mid-write: truncate it) from damage before the end (stop, name the offset, offer
`salvage`, which keeps every record before the damage and copies the original aside). This
module does plain file I/O only; the writing side with its greenlet and threadpool is
`broker/server/journal_writer.py`.
"""

from __future__ import annotations

import os
import shutil
import time
import zlib
from dataclasses import dataclass, field

from .record_codec import FRAME_HEADER, MAX_RECORD, CorruptRecord, decode_record
from .records import Record

JOURNAL_NAME = "greenfly.journal"
MAGIC = b"GREENFLY-JOURNAL"
VERSION = 1
HEADER = MAGIC + VERSION.to_bytes(2, "big") + b"\x00\x00"


class JournalCorrupt(Exception):
    """The journal has damage before its end; start-up stops and says how to salvage."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        self.path = path
        self.offset = offset
        self.reason = reason
        super().__init__(f"{path} is damaged at offset {offset}: {reason}")


@dataclass
class JournalScan:
    """What reading a journal found."""

    records: list[Record] = field(default_factory=list)
    good_end: int = 0  # end of the last whole frame
    size: int = 0
    damage: tuple[int, str] | None = None  # (offset, reason) of damage before the end
    torn_tail: int = 0  # bytes of a final frame that was cut short


def scan_journal(path: str) -> JournalScan:
    """Read every record; report a torn tail and the first damage. Changes nothing."""
    with open(path, "rb") as fh:
        data = fh.read()
    result = JournalScan(size=len(data))
    if not data:
        return result
    if len(data) < len(HEADER) and HEADER.startswith(data):
        result.torn_tail = len(data)  # a crash while the header was being written
        return result
    if data[:len(MAGIC)] != MAGIC:
        result.damage = (0, "not a greenfly journal (bad magic)")
        return result
    version = int.from_bytes(data[len(MAGIC):len(MAGIC) + 2], "big")
    if version != VERSION:
        result.damage = (len(MAGIC), f"journal version {version}, this greenfly reads {VERSION}")
        return result
    pos = len(HEADER)
    size = len(data)
    records = result.records
    append = records.append
    unpack_header = FRAME_HEADER.unpack_from
    header_size = FRAME_HEADER.size
    crc32 = zlib.crc32
    try:
        while pos < size:  # the start-up hot loop: names bound locally on purpose
            if pos + header_size > size:
                result.torn_tail = size - pos
                break
            length, crc = unpack_header(data, pos)
            end = pos + header_size + length
            if length > MAX_RECORD:
                result.damage = (pos, f"frame length {length} is impossible")
                break
            if end > size:
                result.torn_tail = size - pos
                break
            body = data[pos + header_size:end]
            if crc32(body) != crc:
                if end == size:
                    result.torn_tail = size - pos  # the last frame, half written
                else:
                    result.damage = (pos, "bad CRC")
                break
            append(decode_record(body))
            pos = end
    except CorruptRecord as exc:
        result.damage = (pos, str(exc))
    result.good_end = pos
    return result


def salvage(path: str) -> tuple[JournalScan, str | None]:
    """Keep every record before the first damage: the original is copied aside first."""
    found = scan_journal(path)
    if found.damage is None and not found.torn_tail:
        return found, None
    backup = f"{path}.damaged-{time.strftime('%Y%m%dT%H%M%S')}"
    shutil.copy2(path, backup)
    with open(path, "r+b") as fh:
        if found.good_end < len(HEADER):
            fh.seek(0)
            fh.write(HEADER)
            found.good_end = len(HEADER)
        fh.truncate(found.good_end)
        fh.flush()
        os.fsync(fh.fileno())
    return found, backup


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

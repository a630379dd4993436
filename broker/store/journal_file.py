"""The journal file: its header, its frames, and reading it back without a broker.

`greenfly.journal` is a versioned header, then frames `length | crc32 | body` (see
`record_codec`). `scan_journal` reads every record and tells a torn final frame from damage:
- A torn tail is what a crash mid-write leaves: the last frame cut short (its header, or a
  length running past the end of the file, or a CRC that fails on the very last frame).
  It was never acknowledged; start-up truncates it, keeping the cut bytes beside the
  journal (`save_cut`).
- A length that runs past the end is a torn tail only when nothing intact follows it: a
  flipped bit in the length field of a record in the middle also runs past the end, and
  reading that as a torn tail would truncate every acknowledged record after it. So the
  bytes after it are searched for an intact frame (a length that fits, a matching CRC, a
  body that decodes); if one is found, it is damage.
- Damage stops start-up (the broker names file and offset) and `salvage` repairs it,
  keeping every intact record before and after the damage (`salvage.py`).
This module does plain file I/O only; the writing side with its greenlet and threadpool is
`broker/server/journal_writer.py`.
"""

from __future__ import annotations

import os
import shutil
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from .record_codec import FRAME_HEADER, MAX_RECORD, CorruptRecord, decode_record
from .records import Record
from .salvage import Resynced, next_intact_frame, resync

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


def scan_journal(path: str, consume: Callable[[bytes], None] | None = None) -> JournalScan:
    """Read every record; report a torn tail and the first damage. Changes nothing.

    With `consume`, each intact frame's body is handed to it instead of being decoded into
    `records` (start-up folds them as they come: `journal_fold.py`); it raises
    `CorruptRecord` for a body that is not a record."""
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
                follows = next_intact_frame(data, pos + 1)
                if follows is not None:
                    result.damage = (pos, f"frame length {length} runs past the end of the "
                                     f"journal, but an intact record follows at offset "
                                     f"{follows}")
                else:
                    result.torn_tail = size - pos
                break
            body = data[pos + header_size:end]
            if crc32(body) != crc:
                if end == size:
                    result.torn_tail = size - pos  # the last frame, half written
                else:
                    result.damage = (pos, "bad CRC")
                break
            if consume is None:
                append(decode_record(body))
            else:
                consume(body)
            pos = end
    except CorruptRecord as exc:
        result.damage = (pos, str(exc))
    result.good_end = pos
    return result


def aside_name(path: str, tag: str) -> str:
    """A new file name beside `path` for bytes kept aside: `<path>.<tag>-<time>`."""
    base = f"{path}.{tag}-{time.strftime('%Y%m%dT%H%M%S')}"
    name, n = base, 1
    while os.path.exists(name):
        n += 1
        name = f"{base}.{n}"
    return name


def save_cut(path: str, offset: int) -> str:
    """Copy the bytes of `path` from `offset` to its end into a new file beside it (fsynced),
    before they are truncated: nothing is cut without a copy."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        cut = fh.read()
    name = aside_name(path, "torn")
    with open(name, "wb") as out:
        out.write(cut)
        out.flush()
        os.fsync(out.fileno())
    fsync_dir(os.path.dirname(path) or ".")
    return name


def salvage(path: str) -> tuple[JournalScan, Resynced | None, str | None]:
    """Keep every intact record, before and after the damage (`salvage.resync`): the
    original is copied aside first, and the repaired journal replaces it by a rename, so a
    crash during salvage leaves one or the other. Returns the scan, what was kept, and the
    copy's name (None for both when there was nothing to repair)."""
    found = scan_journal(path)
    if found.damage is None and not found.torn_tail:
        return found, None, None
    with open(path, "rb") as fh:
        data = fh.read()
    if data[:len(MAGIC)] == MAGIC and data[len(MAGIC):len(MAGIC) + 2] != HEADER[len(MAGIC):-2]:
        raise ValueError(f"{path} is a journal of another version ({found.damage}): "
                         "not salvaged; run the greenfly that wrote it")
    start = len(HEADER) if data[:len(HEADER)] == HEADER else 0
    kept = resync(data, start)
    backup = aside_name(path, "damaged")
    shutil.copy2(path, backup)
    tmp = path + ".salvage"
    with open(tmp, "wb") as fh:
        fh.write(HEADER)
        fh.writelines(kept.frames)
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(tmp, path)
    fsync_dir(os.path.dirname(path) or ".")
    return found, kept, backup


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""`JournalStore`: the file-journal session store. What the broker acknowledged is on disk.

The file format and reading it back are `store/journal_file.py`; this module is the writing
side, which needs a greenlet and the hub's threadpool, so it lives in the I/O layer. Rules:
- Appends never block: records are encoded into a pending list and one writer greenlet
  writes everything pending in one `write`, then (`fsync = "always"`) one `fsync`, both in the
  hub's threadpool, then releases every waiter at once (group commit). `"interval"` fsyncs at
  most every `fsync_interval_ms`; `"never"` leaves flushing to the OS. The hub never touches
  the disk.
- `is_durable(seq)` / `wait_durable(seq)` are what acknowledgements wait on: under `"always"`
  a record is durable once the fsync after it returned; under the other policies once it was
  written (handed to the OS), so a crash of the process loses nothing acknowledged.
- A failed write (ENOSPC, EFBIG, EIO) truncates the file back to its last good size, keeps
  the batch pending, fails every waiter (their acknowledgements are not sent), sets
  `failure` (new QoS 1/2 publishes are refused while it is set), and retries every second.
- Compaction: when the file outgrows `max(compact_min_bytes, compact_factor x last snapshot)`,
  the broker's live state is taken as records at one instant (no greenlet switch), the
  records still pending at that instant are dropped (the snapshot contains them), and the
  snapshot is written to a temporary file, fsynced, renamed over the journal, and the
  directory fsynced. A crash at any moment leaves either the old journal or the new one.
- One broker per data directory (`store/dir_lock.py`): `load` takes the directory's lock
  before it reads anything and `close` gives it back.
- Recovery (`load`): a torn final frame is truncated and logged, its bytes kept beside the
  journal (`greenfly.journal.torn-<time>`); a bad frame anywhere else
  stops start-up with `JournalCorrupt` (file, offset, and the salvage command), never silently.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from collections.abc import Callable

import gevent
from gevent.event import Event

from ..core.stats import LatencyHistogram
from ..errors import StoreUnavailable
from ..store.base import StoredState
from ..store.dir_lock import DataDirLock
from ..store.journal_file import (
    HEADER,
    JOURNAL_NAME,
    JournalCorrupt,
    fsync_dir,
    save_cut,
    scan_journal,
)
from ..store.journal_fold import JournalFold
from ..store.record_codec import encode_frame
from ..store.records import Record

log = logging.getLogger("greenfly.journal")

RETRY_INTERVAL = 1.0
# Out of room (a file-size limit counts: the journal can grow no further either way).
DISK_FULL = frozenset((errno.ENOSPC, errno.EDQUOT, errno.EFBIG))


class JournalStore:
    self_contained = False  # one log for all sessions: messages are shared by reference

    def __init__(self, data_dir: str, fsync: str = "always", fsync_interval_ms: int = 1000,
                 compact_min_bytes: int = 64 * 1024 * 1024, compact_factor: float = 4.0) -> None:
        self.data_dir = data_dir
        self.path = os.path.join(data_dir, JOURNAL_NAME)
        self.policy = fsync
        self.fsync_interval = fsync_interval_ms / 1000.0
        self.compact_min_bytes = compact_min_bytes
        self.compact_factor = compact_factor
        self.snapshot_source: Callable[[], list[Record]] | None = None
        self.seq = 0
        self.durable_seq = 0
        self.failure: str | None = None
        self.compactions = 0
        self.fsync_seconds = LatencyHistogram()  # every journal fsync, for /metrics
        self._max_msg_id = 0
        self._fd = -1
        self._size = 0
        self._snapshot_size = 0
        self._pending: list[bytes] = []
        self._wake = Event()
        self._round = Event()
        self._on_durable: list[tuple[int, Callable[[], None]]] = []
        self._writer: gevent.Greenlet | None = None
        self._closing = False
        self._closed = Event()  # set by `close`: a writer waiting to retry stops waiting
        self._last_fsync = time.monotonic()
        self._lock = DataDirLock(data_dir)

    # -- start -------------------------------------------------------------------------------

    def load(self) -> StoredState:
        os.makedirs(self.data_dir, exist_ok=True)
        self._lock.acquire()  # DataDirInUse if another broker runs here: before any read
        try:
            return self._load_locked()
        except BaseException:
            self._lock.release()
            raise

    def _load_locked(self) -> StoredState:
        tmp = self.path + ".tmp"
        if os.path.exists(tmp):
            os.unlink(tmp)  # a compaction that never reached its rename
            log.warning("removed %s left by an interrupted compaction", tmp)
        # Folded frame by frame as the scan reads them: no list of every record.
        fold = JournalFold()
        good_end = 0
        if os.path.exists(self.path):
            found = scan_journal(self.path, fold.consume)
            if found.damage is not None:
                raise JournalCorrupt(self.path, *found.damage)
            good_end = found.good_end
            if found.torn_tail:
                kept = save_cut(self.path, found.good_end)
                log.warning("%s: truncating a torn final frame of %d bytes at offset %d "
                            "(the broker stopped while writing it; it was never acknowledged); "
                            "the cut bytes are kept in %s", self.path, found.torn_tail,
                            found.good_end, kept)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        if good_end < len(HEADER):  # a new journal, or one whose header never reached disk
            os.ftruncate(self._fd, 0)
            os.write(self._fd, HEADER)
            os.fsync(self._fd)
            fsync_dir(self.data_dir)
        elif os.fstat(self._fd).st_size > good_end:
            os.ftruncate(self._fd, good_end)
            os.fsync(self._fd)
        self._size = self._snapshot_size = os.fstat(self._fd).st_size
        state = fold.finish()
        self._max_msg_id = state.max_msg_id
        log.info("journal %s: %d records, %d bytes, fsync=%s", self.path, fold.records,
                 self._size, self.policy)
        self._writer = gevent.spawn(self._run)
        return state

    # -- the SessionStore interface ----------------------------------------------------------

    def append(self, record: Record) -> int:
        self._pending.append(encode_frame(record))
        self.seq += 1
        if not self._wake.is_set():
            self._wake.set()
        return self.seq

    @property
    def size(self) -> int:
        """Bytes in the journal file (what the last write left; /metrics reads it)."""
        return self._size

    def new_message_id(self) -> int:
        self._max_msg_id += 1
        return self._max_msg_id

    def is_durable(self, seq: int) -> bool:
        """Written and fsynced (`"always"`), or written, so a crash of the process cannot lose
        it (`"interval"`, `"never"`): never only appended to the pending list."""
        return seq <= self.durable_seq

    def wait_durable(self, seq: int) -> None:
        while self.durable_seq < seq:
            if self.failure is not None:
                raise StoreUnavailable(f"the journal cannot be written: {self.failure}")
            self._round.wait()

    def on_durable(self, seq: int, callback: Callable[[], None]) -> None:
        """Call `callback` from the writer greenlet once record `seq` is durable or a write
        failed (the callback looks at `is_durable` and `failure`): an outbox waiting for an
        acknowledgement's record needs no greenlet of its own to wait in."""
        if seq <= self.durable_seq:
            callback()
        else:
            self._on_durable.append((seq, callback))

    def close(self) -> None:
        """Write and fsync everything pending, then release the file."""
        self._closing = True
        self._wake.set()
        self._closed.set()
        writer = self._writer
        if writer is not None:
            writer.join(timeout=10)
            writer.kill(block=False)
        if self._fd < 0:
            self._lock.release()
            return
        error = self._write(b"".join(self._pending), sync=True)
        if error is not None:
            # Still failing at shutdown: these records were never acknowledged, and the
            # journal on disk ends at its last good frame.
            log.error("journal %s: %d record(s) could not be written at shutdown: %s",
                      self.path, len(self._pending), error)
        self._pending.clear()
        os.close(self._fd)
        self._fd = -1
        self._lock.release()

    # -- the writer greenlet -----------------------------------------------------------------

    def _run(self) -> None:
        pool = gevent.get_hub().threadpool
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                self._wake.wait(self._idle_wait())
                if self.policy == "interval" and not self._pending:
                    self._maybe_interval_fsync(pool)
                continue
            count = len(self._pending)
            upto = self.seq
            data = b"".join(self._pending[:count])
            sync = self.policy == "always" or (
                self.policy == "interval"
                and time.monotonic() - self._last_fsync >= self.fsync_interval)
            error = pool.apply(self._write, (data, sync))
            if error is not None:
                self._write_failed(error)
                if self._closing:
                    return  # `close` tries once more and says what could not be written
                self._closed.wait(RETRY_INTERVAL)  # the retry, or `close`, which ends this
                continue
            del self._pending[:count]
            if sync:
                self._last_fsync = time.monotonic()
            if self.failure is not None:
                log.warning("journal writes work again; acknowledging QoS 1/2 again")
                self.failure = None
            self.durable_seq = upto  # as durable as the policy promises ("always" synced)
            self._release_waiters()
            if self._compaction_due():
                self._compact(pool)

    def _idle_wait(self) -> float | None:
        return self.fsync_interval if self.policy == "interval" else None

    def _maybe_interval_fsync(self, pool: object) -> None:
        if time.monotonic() - self._last_fsync >= self.fsync_interval:
            error = pool.apply(self._write, (b"", True))  # type: ignore[attr-defined]
            if error is not None:
                self._write_failed(error)
            else:
                self._last_fsync = time.monotonic()

    def _write(self, data: bytes, sync: bool) -> OSError | None:
        """In the threadpool: append `data`, fsync if asked; on error undo the partial write
        and return the error (returned, not raised, so the pool does not print it)."""
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            if sync:
                started = time.perf_counter()
                os.fsync(self._fd)
                # Observed from the pool's thread: the hub only reads the histogram.
                self.fsync_seconds.observe(time.perf_counter() - started)
        except OSError as exc:
            # If even the truncate fails, the retry truncates again: _size is still the truth.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            return exc
        self._size += len(data)
        return None

    def _write_failed(self, exc: OSError) -> None:
        kind = "disk full" if exc.errno in DISK_FULL else "disk error"
        reason = f"{kind}: {exc.strerror or exc} (errno {exc.errno})"
        if self.failure is None:
            log.error("JOURNAL WRITE FAILED: %s: %s. QoS 1/2 publishes are refused (no PUBACK) "
                      "until writes succeed again; QoS 0 and subscriptions keep working. "
                      "Retrying every %gs.", self.path, reason, RETRY_INTERVAL)
        self.failure = reason
        self._release_waiters()

    def _release_waiters(self) -> None:
        done, self._round = self._round, Event()
        done.set()
        callbacks = self._on_durable
        if not callbacks:
            return
        if self.failure is not None:  # every waiter learns of it, and fails its connection
            due, self._on_durable = callbacks, []
        else:
            durable = self.durable_seq
            due = [item for item in callbacks if item[0] <= durable]
            self._on_durable = [item for item in callbacks if item[0] > durable]
        for _seq, callback in due:
            try:
                callback()
            except Exception:  # one connection's trouble must not stop the journal
                log.exception("durability callback failed")

    # -- compaction --------------------------------------------------------------------------

    def _compaction_due(self) -> bool:
        return (self.snapshot_source is not None and not self._closing
                and self._size > max(self.compact_min_bytes,
                                     self.compact_factor * self._snapshot_size))

    def _compact(self, pool: object) -> None:
        started = time.monotonic()
        old_size = self._size
        cut = self.seq
        cut_pending = len(self._pending)
        records = self.snapshot_source()  # one instant: no greenlet switch in here
        log.info("compacting %s: %d bytes, %d live records", self.path, old_size, len(records))
        size = pool.apply(self._write_snapshot, (records,))  # type: ignore[attr-defined]
        if isinstance(size, OSError):
            # The old journal is still the journal; what was pending goes there as usual.
            log.error("compaction of %s failed, the journal stays as it was: %s", self.path,
                      size)
            self._snapshot_size = self._size  # do not retry at once
            return
        # Everything appended up to `cut` is inside the snapshot: those records must not be
        # written again after it.
        del self._pending[:cut_pending]
        self._size = self._snapshot_size = size
        self.durable_seq = max(self.durable_seq, cut)
        self.compactions += 1
        self._release_waiters()
        log.info("compacted %s: %d -> %d bytes in %.2fs", self.path, old_size, size,
                 time.monotonic() - started)

    def _write_snapshot(self, records: list[Record]) -> int | OSError:
        """In the threadpool: temp file, fsync, rename over the journal, fsync the directory.
        Returns the new size, or the error (the old journal is then still the journal)."""
        tmp = self.path + ".tmp"
        data = HEADER + b"".join(encode_frame(record) for record in records)
        new_fd = -1
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            new_fd = os.open(tmp, os.O_WRONLY | os.O_APPEND)  # follows the file through rename
            os.rename(tmp, self.path)  # the commit point
        except OSError as exc:
            if new_fd >= 0:
                os.close(new_fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            return exc
        old_fd, self._fd = self._fd, new_fd
        os.close(old_fd)
        try:
            fsync_dir(self.data_dir)
        except OSError as exc:  # the rename is done; a lost rename would leave the old journal
            log.error("fsync of %s after compaction failed: %s", self.data_dir, exc)
        return len(data)

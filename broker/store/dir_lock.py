"""One broker per data directory: an flock on `greenfly.lock` held for the process's life.

Two brokers appending to one journal corrupt each other (message ids collide; after a
restart a session can receive another's messages on a topic it never subscribed to), so the
broker takes an exclusive flock on `data_dir/greenfly.lock` before it reads the journal and
keeps it until it stops; the file holds its PID so a second broker can name the holder. The
kernel drops the lock when the process dies, however it dies (kill -9 too): no stale locks.

`greenfly inspect` and `greenfly check` read without the lock; `holder()` only asks whether
a broker is running. It takes a shared lock for an instant, which an exclusive request
arriving in that instant would see as busy: `acquire` therefore retries for a second
before it gives up.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time

LOCK_NAME = "greenfly.lock"
ACQUIRE_PATIENCE = 1.0  # seconds a starting broker retries a lock held for an instant


class DataDirInUse(Exception):
    """Another process holds the data directory's lock."""

    def __init__(self, data_dir: str, pid: int | None) -> None:
        self.data_dir = data_dir
        self.pid = pid
        who = f"PID {pid}" if pid else "another process"
        super().__init__(f"data_dir {data_dir} is in use by another greenfly ({who}, holding "
                         f"{os.path.join(data_dir, LOCK_NAME)})")


class DataDirLock:
    """The held lock; `release` (at shutdown) or the process's end gives it back."""

    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir
        self.path = os.path.join(data_dir, LOCK_NAME)
        self._fd = -1

    def acquire(self) -> None:
        """Take the lock and write our PID into it, or raise DataDirInUse naming the holder."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + ACQUIRE_PATIENCE
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    pid = _read_pid(fd)
                    os.close(fd)
                    raise DataDirInUse(self.data_dir, pid) from None
                time.sleep(0.02)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            # The PID stays in the file: harmless, and the lock, not the file, is the truth.
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = -1


def holder(data_dir: str) -> int | None:
    """The PID of the broker running on `data_dir` (0 if it wrote none), or None when none
    is. Never blocks, and never keeps a lock (the caller only reads)."""
    path = os.path.join(data_dir, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _read_pid(fd) or 0  # running, PID unknown
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    return None

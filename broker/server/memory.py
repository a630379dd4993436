"""Giving memory back to the system after many connections closed.

A closed connection frees its objects at once (it leaves no reference cycle behind), but
glibc's allocator keeps freed pages inside its heap for reuse and returns only the top of
it: after a thousand slow readers leave, the broker's resident size stays at its peak.
`malloc_trim(0)` hands every free page back; it walks the heap (milliseconds for tens of
MiB), so it runs from the watchdog, at most once a second, and only after `TRIM_AFTER`
connections closed since the last time. Without glibc (musl, macOS) it does nothing.
libc is looked up by `prepare`, which the broker spawns as its ports open, so it runs in the
hub's first iteration: after the port accepts (ctypes is ~2 ms of a cold start), before any
burst of connections. Looked up at the first trim, and even in the watchdog's first second
(a burst can begin sooner: the slow-readers bench starts one 0.6 s after the port opens),
ctypes's long-lived objects (a CDLL, its function pointer type and that type's dict) were
allocated among the burst's connections and each pinned a CPython arena (1 MiB) they filled.
The process's own symbol table has `malloc_trim` wherever libc is glibc, so no library
search is needed.
"""

from __future__ import annotations

from collections.abc import Callable

TRIM_AFTER = 100  # connections closed since the last trim


def _malloc_trim() -> Callable[[int], int] | None:
    import ctypes

    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


class MemoryReturn:
    __slots__ = ("closed", "_trim", "_looked_up")

    def __init__(self) -> None:
        self.closed = 0  # connections closed since the last trim
        self._trim: Callable[[int], int] | None = None
        self._looked_up = False

    def prepare(self) -> None:
        """From a greenlet spawned as the ports open: look libc up before any burst does."""
        if not self._looked_up:
            self._trim, self._looked_up = _malloc_trim(), True

    def tick(self) -> bool:
        """From the watchdog, once a second: trim if enough connections closed; True if so."""
        self.prepare()  # done already, unless the watchdog ran first
        if self.closed < TRIM_AFTER or self._trim is None:
            return False
        self.closed = 0
        self._trim(0)
        return True

"""Giving memory back to the system after many connections closed.

A closed connection frees its objects at once (it leaves no reference cycle behind), but
glibc's allocator keeps freed pages inside its heap for reuse and returns only the top of
it: after a thousand slow readers leave, the broker's resident size stays at its peak.
`malloc_trim(0)` hands every free page back; it walks the heap (milliseconds for tens of
MiB), so it runs from the watchdog, at most once a second, and only after `TRIM_AFTER`
connections closed since the last time. Without glibc (musl, macOS) it does nothing.
libc is looked up at the first trim, not at start-up: `ctypes.util.find_library` runs
`ldconfig -p` (a fork and exec, ~6 ms of a cold start).
"""

from __future__ import annotations

from collections.abc import Callable

TRIM_AFTER = 100  # connections closed since the last trim


def _malloc_trim() -> Callable[[int], int] | None:
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


class MemoryReturn:
    __slots__ = ("closed", "_trim", "_looked_up")

    def __init__(self) -> None:
        self.closed = 0  # connections closed since the last trim
        self._trim: Callable[[int], int] | None = None
        self._looked_up = False

    def tick(self) -> bool:
        """From the watchdog, once a second: trim if enough connections closed; True if so."""
        if self.closed < TRIM_AFTER:
            return False
        if not self._looked_up:
            self._trim, self._looked_up = _malloc_trim(), True
        if self._trim is None:
            return False
        self.closed = 0
        self._trim(0)
        return True

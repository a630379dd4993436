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

Trimming gives back a page only when nothing lives on it, and the broker's memory is not all
glibc's. CPython's own small-object allocator (pymalloc) takes 1 MiB arenas from the system
and returns one only when every object in it is gone: after 1,000 slow readers left, a few
hundred objects that any running broker allocates as it goes (a `$SYS` value, a counter, the
publisher's keepalive deadline) sat in four arenas the burst had filled and kept them, 5 MiB,
+22 % of the broker at rest. So the broker runs on glibc's allocator (`PYTHONMALLOC=malloc`,
set by `use_system_allocator` before anything else, by re-executing itself), where such an
object keeps its page, not its megabyte: +6-7 % after ten bursts. It costs up to a fifth more
CPU per message (none for fan-out), 10 % more memory per idle connection and a second
interpreter start (bench/README.md, "Slow readers", has the A/B); an operator who would
rather have those sets `PYTHONMALLOC=pymalloc` in the service's environment.
Page by page, what a burst leaves must still be few objects: before each trim
`release_free_lists` empties what CPython keeps for reuse (up to 2,000 freed tuples of each
small size, and the method cache's copies of attribute names), which a burst fills with
objects scattered over its pages.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable

TRIM_AFTER = 100  # connections closed since the last trim


def _malloc_trim() -> Callable[[int], int] | None:
    import ctypes

    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


ALLOCATOR = "PYTHONMALLOC"


def use_system_allocator() -> None:
    """Re-execute this process (same PID, arguments, descriptors) on glibc's allocator, once:
    unless the allocator was chosen already, or libc is not glibc (no `malloc_trim`). Called
    by every `greenfly` command first thing, before anything is opened or imported: telling
    the broker from the tools would take the command line's parser, ~60 ms of imports to do
    twice; the tools' only cost is the second interpreter start, ~20 ms."""
    if ALLOCATOR in os.environ or not sys.executable or not _glibc():
        return
    os.environ[ALLOCATOR] = "malloc"
    os.execv(sys.executable, sys.orig_argv)


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError):
        return False


def release_free_lists() -> None:
    """Free the objects CPython keeps for reuse, so that the pages they sit on can go back.
    A collection of the oldest generation empties the free lists (tuples, floats, lists,
    dicts); run with every tracked object frozen, it scans nothing: 0.2 ms beside 400,000
    objects, where a real full collection took 38-56 ms with 10,000 connections. Unfreezing
    puts what start-up froze (cli.tune_gc) back among the old objects: collections of the
    oldest generation, rare, then scan those ~25,000 too. The method cache keeps a reference
    to each name it was asked for, and gevent asks for `stop` by a fresh string each time a
    timer fires: up to 4,096 strings."""
    gc.freeze()
    try:
        gc.collect()
    finally:
        gc.unfreeze()
    sys._clear_type_cache()


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
        release_free_lists()
        self._trim(0)
        return True

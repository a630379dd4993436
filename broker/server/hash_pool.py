"""`HashPool`: password checks in threads of their own, behind a short, bounded queue.

- A `$7$` check at the default cost is about 0.15 s of CPU (PBKDF2 releases the GIL). In the
  hub's threadpool a burst of wrong passwords queued the journal's fsyncs behind it: durable
  PUBACKs of unrelated clients took tens of seconds. This pool has `hash_threads` threads
  of its own; the journal keeps the hub's pool to itself.
- At most `hash_queue` checks wait for a thread. One more is refused at once (`PoolBusy`:
  CONNACK 0x03, MQTT 5 0x89) instead of waiting seconds behind the others, and so is a
  check that waited longer than its caller's patience.
- Its threads run at a lower priority (nice +10) than the event loop, so on a small
  machine a burst of hashing takes only the CPU the broker's own work leaves over.
- Checks are served in arrival order. A check asks `still_wanted()` when its turn comes,
  and the queue asks every waiter when it is full: one whose client hung up (or that its
  caller no longer wants) leaves without a hash (`NotWanted`), so nothing is hashed for
  clients that are gone.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from gevent.event import Event

if TYPE_CHECKING:
    from gevent.threadpool import ThreadPool

T = TypeVar("T")
A = TypeVar("A")


NICENESS = 10  # of a hash thread, above the process's own


def _lower_priority() -> None:
    """Run this pool thread at a lower priority than the event loop (Linux nice values are
    per thread): hashing then takes only the CPU the hub and the journal leave over."""
    if getattr(_lowered, "done", False):
        return
    _lowered.done = True
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + NICENESS)
    except OSError:
        pass  # not Linux, or not allowed: hashing still runs, at the same priority


_lowered = threading.local()


class PoolBusy(Exception):
    """No thread for this check soon enough: the queue is full, or it waited too long."""


class NotWanted(Exception):
    """The check's caller stopped wanting it before it was hashed (the client hung up)."""


class _Waiter:
    __slots__ = ("turn", "still_wanted", "dropped")

    def __init__(self, still_wanted: Callable[[], bool]) -> None:
        self.turn = Event()
        self.still_wanted = still_wanted
        self.dropped = False  # woken to leave, not to run


class HashPool:
    def __init__(self, threads: int, queue_limit: int) -> None:
        self.threads = threads
        self.queue_limit = queue_limit
        self._threads: ThreadPool | None = None  # made by the first check (see `_pool`)
        self._running = 0  # checks holding a thread (or handed one and about to run)
        self._waiting: deque[_Waiter] = deque()
        self.hashed = 0  # counters for the log and the benchmark
        self.dropped = 0
        self.refused = 0

    @property
    def _pool(self) -> ThreadPool:
        """The threads, made at the first check: a broker without password files never
        hashes, and gevent.threadpool is not imported before the port accepts."""
        if self._threads is None:
            from gevent.threadpool import ThreadPool

            self._threads = ThreadPool(self.threads)
        return self._threads

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def run(self, func: Callable[[A], T], arg: A, still_wanted: Callable[[], bool],
            patience: float) -> T:
        """`func(arg)` in a pool thread, blocking the calling greenlet only. PoolBusy when no
        thread comes within `patience` seconds or the queue is full; NotWanted when
        `still_wanted()` says no before the hash starts."""
        if self._running < self.threads and not self._waiting:
            self._running += 1
        else:
            self._wait_for_turn(still_wanted, patience)
        try:  # this greenlet holds a thread's place now
            if not still_wanted():
                self.dropped += 1
                raise NotWanted()
            self.hashed += 1
            return _call(self._pool, func, arg)
        finally:
            self._hand_on()

    def _wait_for_turn(self, still_wanted: Callable[[], bool], patience: float) -> None:
        if len(self._waiting) >= self.queue_limit:
            self._drop_unwanted()
            if len(self._waiting) >= self.queue_limit:
                self.refused += 1
                raise PoolBusy(f"{len(self._waiting)} password checks already waiting "
                               "(hash_queue)")
        waiter = _Waiter(still_wanted)
        self._waiting.append(waiter)
        deadline = time.monotonic() + patience
        try:
            waiter.turn.wait(max(0.0, deadline - time.monotonic()))
        except BaseException:  # killed while waiting (shutdown): give a thread on
            if waiter.turn.is_set() and not waiter.dropped:
                self._hand_on()
            elif not waiter.turn.is_set():
                self._waiting.remove(waiter)
            raise
        if waiter.dropped:
            self.dropped += 1
            raise NotWanted()
        if not waiter.turn.is_set():
            self._waiting.remove(waiter)
            self.refused += 1
            raise PoolBusy(f"no hash thread free within {patience:g}s")

    def _drop_unwanted(self) -> None:
        """Wake every waiter that is no longer wanted, to leave: room for new checks."""
        kept: deque[_Waiter] = deque()
        for waiter in self._waiting:
            if waiter.still_wanted():
                kept.append(waiter)
            else:
                waiter.dropped = True
                waiter.turn.set()
        self._waiting = kept

    def _hand_on(self) -> None:
        """A thread's place is free: it goes to the first waiter, else back to the pool."""
        if self._waiting and self._running <= self.threads:
            self._waiting.popleft().turn.set()  # _running stays: the place changes hands
        else:
            self._running -= 1

    def resize(self, threads: int, queue_limit: int) -> None:
        """A reload: more threads serve waiters now, fewer take effect as checks end."""
        self.threads, self.queue_limit = threads, queue_limit
        if self._threads is not None:
            self._threads.maxsize = threads
        while self._running < self.threads and self._waiting:
            self._running += 1
            self._waiting.popleft().turn.set()

    def close(self) -> None:
        if self._threads is not None:
            self._threads.kill()


def _call(pool: ThreadPool, func: Callable[[A], T], arg: A) -> T:
    """`func(arg)` in `pool`. An exception is raised in the calling greenlet only: raised in
    the thread, gevent's hub would also print it to stderr, outside the log."""
    def call() -> tuple[T | None, BaseException | None]:
        try:
            _lower_priority()
            return func(arg), None
        except Exception as exc:
            return None, exc

    result, error = pool.apply(call)
    if error is not None:
        raise error
    return result  # type: ignore[return-value]

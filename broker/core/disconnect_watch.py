"""`DisconnectWatch`: notices when something on the network path keeps cutting a client.

What an idle timeout looks like from the broker: nginx (`proxy_read_timeout`, `proxy_timeout`),
a load balancer or frp closes a connection that carried nothing for T seconds by closing its
upstream socket, so the broker sees a plain close by the peer, with no DISCONNECT, after about
T seconds — every time, because the client reconnects and goes quiet again. A healthy client
with keepalive K is never quiet for more than K seconds (1.5 x K is when the broker itself
gives up), so connections that end by a peer close, again and again after the same duration,
well before 1.5 x K, point at a timeout on the path that is shorter than the client's keepalive.
(Mosquitto users know this as "Socket error on client ..., disconnecting" every 60 s: nginx's
default `proxy_read_timeout` is 60 s.)

Rule: for each client id, the durations of its consecutive connections that ended by a peer
close (a clean DISCONNECT, a keepalive timeout, a takeover... reset the streak). When the last
`STREAK` of them are within `TOLERANCE` of their median, at least `MIN_SECONDS` long, and shorter
than 1.5 x the client's keepalive (any length when its keepalive is 0), log one warning naming
the likely cause — once per client id per `REPEAT_AFTER` seconds, not once per disconnect.
Memory is bounded: at most `MAX_CLIENTS` client ids are remembered (least recently seen first
out), since clients with generated ids never come back under the same id; a client id with
nothing to remember (a clean end, a connection too short to be in a streak, and no warning
within `REPEAT_AFTER`) is forgotten at once. What is remembered is kept in flat arrays, one
slot per client id found by the id's hash, written in place: a thousand devices cut again and
again leave no object behind, not even their ids (such stragglers, allocated in a burst of
closes among the closed connections' freed memory, keep the pages they sit on resident:
server/memory.py).

Layer B: no sockets, no gevent; the connection's protocol calls `ended()` as it closes.
"""

from __future__ import annotations

import logging
import time
from array import array
from collections.abc import Callable

log = logging.getLogger("greenfly.connection")

STREAK = 3
TOLERANCE = 0.10
MIN_SECONDS = 1.0  # a client that dies at once every time is crashing, not being cut
REPEAT_AFTER = 3600.0
MAX_CLIENTS = 10_000
# A duration this short is never within TOLERANCE of a median of MIN_SECONDS or more: it ends
# any streak it is in, as a clean end does (with a margin for rounding).
SHORT = MIN_SECONDS * (1 - 2 * TOLERANCE)
NEVER = float("-inf")  # warned_at of a client never warned


class DisconnectWatch:
    """Per client id, in flat arrays only: a slot per id remembered, found through an
    open-addressing table of `hash(client_id)`, with a least-recently-seen order as links
    between slots. No object per id is kept, not even the id: a thousand ids remembered in a
    burst of closes left their strings, slot numbers and ordered-dict nodes scattered over
    the burst's freed memory, about one to a page: they kept 4.6 MiB from going back (+20 %
    of the broker at rest, bench/slow_readers.py). Two ids with the same 64-bit hash would
    share a streak: a diagnostic can live with that chance."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 warn: Callable[[str], None] | None = None) -> None:
        self._hashes = array("q")  # per slot: hash(client id)
        self._older = array("l")  # per slot: the slot seen before it, or -1
        self._newer = array("l")  # per slot: the slot seen after it, or -1
        self._index = array("l")  # slot + 1 at hash & mask (0: empty); a power of 2 long
        self._free = array("l")  # slots to reuse
        self._ends = array("l", (-1, -1, 0))  # oldest slot, newest slot, slots in use
        self._durations = array("d")  # STREAK per slot, oldest first
        self._lengths = array("B")  # how many of a slot's durations count
        self._warned_at = array("d")
        self._clock = clock
        self._warn = warn if warn is not None else log.warning

    def __len__(self) -> int:
        """How many client ids are remembered."""
        return self._ends[2]

    def ended(self, client_id: str, keepalive: int, duration: float, by_peer: bool) -> str | None:
        """Record how one connection of `client_id` ended; the warning, when one is due."""
        key = hash(client_id)
        slot = self._find(key)
        if not by_peer or duration < SHORT:
            if slot >= 0:
                self._lengths[slot] = 0  # the streak ends here
                if self._clock() - self._warned_at[slot] >= REPEAT_AFTER:
                    self._forget(slot)
            return None
        if slot < 0:
            slot = self._remember(key)
        else:
            self._unlink(slot)
            self._link_newest(slot)
        durations = self._push(slot, duration)
        if durations is None or not looks_like_idle_timeout(durations, keepalive):
            return None
        now = self._clock()
        if now - self._warned_at[slot] < REPEAT_AFTER:
            return None
        self._warned_at[slot] = now
        message = diagnosis(client_id, keepalive, durations)
        self._warn(message)
        return message

    def _push(self, slot: int, duration: float) -> list[float] | None:
        """Add `duration` to the slot's streak; the last STREAK durations, once there are."""
        base, length = slot * STREAK, self._lengths[slot]
        stored = self._durations
        if length < STREAK:
            stored[base + length] = duration
            self._lengths[slot] = length + 1
            if length + 1 < STREAK:
                return None
        else:
            stored[base:base + STREAK - 1] = stored[base + 1:base + STREAK]
            stored[base + STREAK - 1] = duration
        return stored[base:base + STREAK].tolist()

    def _find(self, key: int) -> int:
        """The slot of `key`, or -1."""
        index = self._index
        if not index:
            return -1
        mask = len(index) - 1
        at = key & mask
        while entry := index[at]:
            if self._hashes[entry - 1] == key:
                return entry - 1
            at = (at + 1) & mask
        return -1

    def _remember(self, key: int) -> int:
        ends = self._ends
        if ends[2] >= MAX_CLIENTS:
            self._forget(ends[0])  # the least recently seen
        if self._free:
            slot = self._free.pop()
            self._hashes[slot] = key
        else:
            slot = len(self._lengths)
            self._durations.extend((0.0,) * STREAK)
            self._lengths.append(0)
            self._warned_at.append(NEVER)
            self._hashes.append(key)
            self._older.append(-1)
            self._newer.append(-1)
        self._lengths[slot] = 0
        self._warned_at[slot] = NEVER
        ends[2] += 1
        if 2 * ends[2] > len(self._index):
            self._rebuild_index(max(16, 2 * len(self._index)))
        self._place(slot)
        self._link_newest(slot)
        return slot

    def _place(self, slot: int) -> None:
        index = self._index
        mask = len(index) - 1
        at = self._hashes[slot] & mask
        while index[at]:
            at = (at + 1) & mask
        index[at] = slot + 1

    def _rebuild_index(self, size: int) -> None:
        index = self._index  # grown in place: a new array would be one more object kept
        del index[:]
        index.frombytes(bytes(size * index.itemsize))
        slot = self._ends[0]
        while slot >= 0:
            self._place(slot)
            slot = self._newer[slot]

    def _forget(self, slot: int) -> None:
        index = self._index
        mask = len(index) - 1
        at = self._hashes[slot] & mask
        while index[at] != slot + 1:
            at = (at + 1) & mask
        # Backward-shift deletion: later entries of the same run move up into the hole.
        hole, probe = at, at
        while True:
            probe = (probe + 1) & mask
            entry = index[probe]
            if not entry:
                break
            home = self._hashes[entry - 1] & mask
            if (hole < probe and hole < home <= probe) or \
                    (hole > probe and (home > hole or home <= probe)):
                continue  # its home is between the hole and here: it stays
            index[hole] = entry
            hole = probe
        index[hole] = 0
        self._unlink(slot)
        self._free.append(slot)
        self._ends[2] -= 1
        if not self._ends[2]:
            # all gone: let go of the tables too
            for table in (self._hashes, self._older, self._newer, self._index, self._free,
                          self._durations, self._lengths, self._warned_at):
                del table[:]

    def _unlink(self, slot: int) -> None:
        ends, older, newer = self._ends, self._older[slot], self._newer[slot]
        if older >= 0:
            self._newer[older] = newer
        else:
            ends[0] = newer
        if newer >= 0:
            self._older[newer] = older
        else:
            ends[1] = older

    def _link_newest(self, slot: int) -> None:
        ends = self._ends
        newest = ends[1]
        self._older[slot], self._newer[slot] = newest, -1
        if newest >= 0:
            self._newer[newest] = slot
        else:
            ends[0] = slot
        ends[1] = slot


def median(values: list[float]) -> float:
    """statistics.median, without importing statistics (numbers, fractions, decimal: ~5 ms
    of every cold start for a list of three)."""
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def looks_like_idle_timeout(durations: list[float], keepalive: int) -> bool:
    median_duration = median(durations)
    if median_duration < MIN_SECONDS:
        return False
    if any(abs(d - median_duration) > TOLERANCE * median_duration for d in durations):
        return False
    return keepalive == 0 or max(durations) < 1.5 * keepalive


def diagnosis(client_id: str, keepalive: int, durations: list[float]) -> str:
    """The warning: what was seen, the likely cause, and what to change."""
    timeout = median(durations)
    seen = ", ".join(f"{d:.1f}" for d in durations)
    about = f"{timeout:.0f}" if timeout >= 10 else f"{timeout:.1f}"
    if keepalive:
        need = f"{1.5 * keepalive:g}"
        advice = (f"raise that timeout above 1.5 x {keepalive} = {need} s (nginx: "
                  f"proxy_read_timeout / proxy_timeout; `greenfly deploy` derives it from "
                  f"max_keepalive) or lower the client's keepalive below {timeout / 1.5:.0f} s")
    else:
        advice = ("the client's keepalive is 0, so it never pings and any idle timeout cuts it: "
                  f"give it a keepalive below {timeout / 1.5:.0f} s")
    return (f"client {client_id}: its last {len(durations)} connections were each closed by the "
            f"peer after about {about} s ({seen} s), with no DISCONNECT; likely cause: a proxy or "
            f"NAT idle timeout of about {about} s versus the client's keepalive {keepalive} s. "
            f"Fix: {advice}. `greenfly probe --idle N URL` measures the path.")

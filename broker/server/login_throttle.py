"""`LoginThrottle`: failed logins per address and per user name, and what the next costs.

- Failures are counted per address (the IP, without the port) and per user name, known or
  not; a count is forgotten `FAILURE_MEMORY` seconds after its last failure. An attempt's
  slow-down comes from the larger of its two counts: none after no failure, then 0.25 s,
  doubling up to 8 s. It is waited *before* the password is hashed, so guesses cost the
  guesser time, not the broker CPU.
- A success clears that user name's count only. The address keeps its own: behind a TCP
  proxy every device shares 127.0.0.1, and one device logging in must not hand a guesser
  at the same address fast guesses again. Guesses at one user from many addresses slow
  down all the same, until that user logs in.
- Shedding, before anything is waited for or hashed: an address or user name with
  `SHED_AFTER` recent failures gets one attempt at a time; another is refused (CONNACK
  0x03, MQTT 5 0x89 server busy) after the slow-down, without a hash. An attempt admitted
  before failures it did not wait for (the rest of a burst that arrived on a clean slate)
  is `stale`, and refused the same way when its turn to hash comes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

FAILURE_MEMORY = 600.0  # seconds after which an address's or a user's failures are forgotten
FIRST_DELAY = 0.25
MAX_DELAY = 8.0
SHED_AFTER = 2  # failures after which an address or user name gets one attempt at a time
LIMIT = 10_000  # remembered addresses (and user names) before the forgotten ones are swept


def delay_after(failures: int) -> float:
    """Seconds an attempt waits after this many recent failures."""
    return 0.0 if failures <= 0 else min(FIRST_DELAY * 2 ** (failures - 1), MAX_DELAY)


class _Counts:
    """Recent failures and attempts in progress, per key (an address or a user name)."""

    def __init__(self) -> None:
        self._failures: dict[str, tuple[int, float]] = {}  # key -> (count, last failure)
        self.active: dict[str, int] = {}

    def count(self, key: str, now: float) -> int:
        count, last = self._failures.get(key, (0, now))
        return count if now - last <= FAILURE_MEMORY else 0

    def fail(self, key: str, now: float) -> int:
        count = self.count(key, now) + 1
        self._failures[key] = (count, now)
        if len(self._failures) > LIMIT:
            self._failures = {k: v for k, v in self._failures.items()
                              if now - v[1] <= FAILURE_MEMORY}
        return count

    def clear(self, key: str) -> None:
        self._failures.pop(key, None)

    def begin(self, key: str) -> None:
        self.active[key] = self.active.get(key, 0) + 1

    def end(self, key: str) -> None:
        left = self.active.get(key, 0) - 1
        if left > 0:
            self.active[key] = left
        else:
            self.active.pop(key, None)


@dataclass(slots=True)
class Attempt:
    """One login attempt: where from, as whom, the counts it was admitted with, and its
    slow-down; `shed` says why it is refused unhashed (None: it may be checked)."""

    host: str
    user: str | None
    seen: tuple[int, int]
    delay: float
    shed: str | None = None
    admitted: bool = False


class LoginThrottle:
    """Shared by every listener and kept across reloads, like the addresses it remembers."""

    def __init__(self) -> None:
        self._hosts = _Counts()
        self._users = _Counts()

    def counts(self, host: str, user: str | None, now: float | None = None) -> tuple[int, int]:
        now = time.monotonic() if now is None else now
        return (self._hosts.count(host, now),
                self._users.count(user, now) if user is not None else 0)

    def admit(self, host: str, user: str | None) -> Attempt:
        """The next attempt from `host` as `user`: its slow-down, or why it is shed. An
        admitted attempt must be `finish`ed."""
        seen = self.counts(host, user)
        attempt = Attempt(host, user, seen, delay_after(max(seen)))
        if seen[0] >= SHED_AFTER and self._hosts.active.get(host):
            attempt.shed = (f"{host} is failing ({seen[0]} recent failures) and already has "
                            "a login being checked")
        elif user is not None and seen[1] >= SHED_AFTER and self._users.active.get(user):
            attempt.shed = (f"user {user} is failing ({seen[1]} recent failures) and already "
                            "has a login being checked")
        else:
            attempt.admitted = True
            self._hosts.begin(host)
            if user is not None:
                self._users.begin(user)
        return attempt

    def stale(self, attempt: Attempt) -> bool:
        """True when failures came since `attempt` was admitted: its slow-down is too short."""
        now = self.counts(attempt.host, attempt.user)
        return now[0] > attempt.seen[0] or now[1] > attempt.seen[1]

    def finish(self, attempt: Attempt, ok: bool | None) -> int:
        """The attempt's outcome (None: no verdict, the client left or the check was shed):
        returns the address's failure count after it."""
        if attempt.admitted:
            attempt.admitted = False
            self._hosts.end(attempt.host)
            if attempt.user is not None:
                self._users.end(attempt.user)
        return self.record(attempt.host, attempt.user, ok)

    def record(self, host: str, user: str | None, ok: bool | None) -> int:
        """A verdict on a login from `host` as `user` (with or without a password check):
        returns the address's failure count after it."""
        now = time.monotonic()
        if ok is False:
            if user is not None:
                self._users.fail(user, now)
            return self._hosts.fail(host, now)
        if ok and user is not None:
            self._users.clear(user)
        return self._hosts.count(host, now)

"""Who may connect, and with which rules: one `ListenerSecurity` per listener.

- Passwords are checked in the hub's threadpool (`hashlib.pbkdf2_hmac` releases the GIL), so
  a reconnect storm never stalls other clients; a successful check is cached under an HMAC
  of (user name, password) with a per-process key, so the cache holds no password, and a
  changed password file invalidates it (the cache is per `ListenerSecurity`, rebuilt on
  reload).
- Failed logins are refused with CONNACK 0x04 (bad user name or password) or 0x05 (not
  authorised) after a delay that doubles with each recent failure from the same address
  (`FailureTracker`, shared by all listeners and kept across reloads): guessing gets slow,
  and only the guesser waits.
- With `use_identity_as_username` the TLS client certificate's common name is the user name.
- `rules()` returns the compiled ACL rules for a client, or None when the listener has no ACL
  file (everything allowed, except publishing to `$SYS`, which the protocol refuses always).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from collections.abc import Callable

import gevent
from gevent.event import AsyncResult

from ..auth.acl import Acl, Rules, load_acl_file
from ..auth.passwords import PasswordHash, load_password_file
from ..config.schema import (
    ANONYMOUS_ALLOWED,
    ANONYMOUS_LOOPBACK,
    ANONYMOUS_WORDS,
    Config,
    ListenerSection,
    anonymous_policy,
    is_loopback_host,
)
from ..core.protocol import AuthRequest, AuthResult
from ..errors import ReasonCode
from ..net.tls import build_ssl_context

log = logging.getLogger("greenfly.security")

CACHE_LIMIT = 10_000
FAILURE_MEMORY = 600.0  # seconds after which an address's failures are forgotten
FIRST_DELAY = 0.25
MAX_DELAY = 8.0


class FailureTracker:
    """Recent failed logins per address (IP, without the port)."""

    def __init__(self) -> None:
        self._failures: dict[str, tuple[int, float]] = {}

    def delay_for(self, host: str) -> tuple[int, float]:
        """Record one more failure; (how many recently, seconds to wait before refusing)."""
        now = time.monotonic()
        count, last = self._failures.get(host, (0, now))
        count = 1 if now - last > FAILURE_MEMORY else count + 1
        self._failures[host] = (count, now)
        if len(self._failures) > CACHE_LIMIT:
            self._failures = {h: v for h, v in self._failures.items()
                              if now - v[1] <= FAILURE_MEMORY}
        delay = 0.0 if count == 1 else min(FIRST_DELAY * 2 ** (count - 2), MAX_DELAY)
        return count, delay

    def forget(self, host: str) -> None:
        self._failures.pop(host, None)


class ListenerSecurity:
    def __init__(self, listener: ListenerSection, anonymous: str, why: str,
                 passwords: dict[str, PasswordHash] | None, acl: Acl | None,
                 failures: FailureTracker) -> None:
        self.listener = listener
        self.anonymous = anonymous  # config.schema's ANONYMOUS_*
        self.anonymous_why = why
        self.passwords = passwords
        self.acl = acl
        self.failures = failures
        self._key = os.urandom(32)
        self._good: dict[bytes, str] = {}
        self._running: dict[bytes, AsyncResult] = {}
        self._rules: dict[tuple[str, str | None], Rules] = {}

    @classmethod
    def build(cls, config: Config, listener: ListenerSection,
              failures: FailureTracker) -> ListenerSecurity:
        """Read the password and ACL files this listener uses; ConfigError if they are bad."""
        anonymous, why = anonymous_policy(config, listener)
        password_file = listener.password_file or config.broker.password_file
        acl_file = listener.acl_file or config.broker.acl_file
        passwords = load_password_file(password_file) if password_file else None
        acl = load_acl_file(acl_file) if acl_file else None
        return cls(listener, anonymous, why, passwords, acl, failures)

    # -- authentication ----------------------------------------------------------------------

    def authenticate(self, request: AuthRequest) -> AuthResult:
        """Decide a CONNECT; blocks the calling greenlet (hashing, failure delay), not the hub:
        the connection calls it, as the protocol asks (core/protocol.py never waits)."""
        username, password, host, identity = (request.username, request.password,
                                              request.host, request.identity)
        if self.listener.use_identity_as_username:
            if identity is None:
                return self._refuse(host, ReasonCode.NOT_AUTHORIZED, None,
                                    "no client certificate identity")
            return AuthResult(ReasonCode.SUCCESS, identity)
        if username is None or self.passwords is None:
            if self.anonymous_from(host):
                return AuthResult(ReasonCode.SUCCESS, username)
            if username is None:
                return self._refuse(host, ReasonCode.NOT_AUTHORIZED, None,
                                    self.anonymous_refusal(host))
            return self._refuse(host, ReasonCode.NOT_AUTHORIZED, username,
                                "no password file to check the user against")
        entry = self.passwords.get(username)
        if entry is None or password is None:
            return self._refuse(host, ReasonCode.BAD_USER_NAME_OR_PASSWORD, username,
                                "unknown user" if entry is None else "no password given")
        try:
            secret = password.decode("utf-8")
        except UnicodeDecodeError:
            return self._refuse(host, ReasonCode.BAD_USER_NAME_OR_PASSWORD, username,
                                "password is not UTF-8")
        key = hmac.new(self._key, username.encode() + b"\0" + password, hashlib.sha256).digest()
        encoded = entry.encode()
        if self._good.get(key) == encoded:
            self.failures.forget(host)
            return AuthResult(ReasonCode.SUCCESS, username)
        if not self._verify(key, entry, secret):
            return self._refuse(host, ReasonCode.BAD_USER_NAME_OR_PASSWORD, username,
                                "wrong password")
        if len(self._good) >= CACHE_LIMIT:
            self._good.clear()
        self._good[key] = encoded
        self.failures.forget(host)
        return AuthResult(ReasonCode.SUCCESS, username)

    # -- who is anonymous from where ------------------------------------------------------

    @property
    def anonymous_words(self) -> str:
        return ANONYMOUS_WORDS[self.anonymous]

    def anonymous_from(self, host: str) -> bool:
        """Whether a client without credentials at `host` (its real address: behind a
        trusted proxy, the one the proxy names) may connect."""
        return self.anonymous == ANONYMOUS_ALLOWED or (
            self.anonymous == ANONYMOUS_LOOPBACK and is_loopback_host(host))

    def anonymous_refusal(self, host: str) -> str:
        if self.anonymous == ANONYMOUS_LOOPBACK:
            return (f"anonymous clients are allowed from loopback addresses only, and {host} "
                    "is remote (allow_anonymous not set)")
        return "anonymous clients are not allowed"

    def _verify(self, key: bytes, entry: PasswordHash, secret: str) -> bool:
        """Hash in the threadpool; identical checks already running are waited for, not
        repeated, so a reconnect storm of one device costs one hash."""
        running = self._running.get(key)
        if running is not None:
            return running.get()
        running = self._running[key] = AsyncResult()
        try:
            ok = in_threadpool(entry.verify, secret)
            running.set(ok)
            return ok
        except BaseException as exc:
            running.set_exception(exc)
            raise
        finally:
            del self._running[key]

    def _refuse(self, host: str, reason: ReasonCode, username: str | None,
                why: str) -> AuthResult:
        count, delay = self.failures.delay_for(host)
        if delay:
            gevent.sleep(delay)
        detail = f"{why} (failure {count} from {host}"
        detail += f", refused after {delay:g}s)" if delay else ")"
        return AuthResult(reason, username, detail)

    # -- authorisation -----------------------------------------------------------------------

    def rules(self, client_id: str, username: str | None) -> Rules | None:
        if self.acl is None:
            return None
        key = (client_id, username)
        found = self._rules.get(key)
        if found is None:
            if len(self._rules) >= CACHE_LIMIT:
                self._rules.clear()
            found = self._rules[key] = self.acl.rules_for(client_id, username)
        return found


def in_threadpool(func: Callable[[str], bool], arg: str) -> bool:
    """`func(arg)` in the hub's threadpool. An exception is raised in the calling greenlet
    only: raised in the thread, gevent's hub would also print it to stderr, outside the log."""
    def call() -> tuple[bool, BaseException | None]:
        try:
            return func(arg), None
        except Exception as exc:
            return False, exc

    result, error = gevent.get_hub().threadpool.apply(call)
    if error is not None:
        raise error
    return result


def check_files(config: Config) -> None:
    """Load every password file, ACL file and certificate the configuration names, as start-up
    would, without listening (for `greenfly check`); ConfigError names the bad one."""
    failures = FailureTracker()
    for listener in config.listeners:
        ListenerSecurity.build(config, listener, failures)
        build_ssl_context(listener)

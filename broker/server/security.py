"""Who may connect, and with which rules: one `ListenerSecurity` per listener.

- Passwords are checked in the `HashPool` (server/hash_pool.py: threads of its own, apart
  from the hub's threadpool that the journal's fsyncs use, and a bounded queue), so a login
  burst never stalls other clients; a successful check is cached under an HMAC of (user
  name, password) with a per-process key, so the cache holds no password, and a changed
  password file invalidates it (the cache is per `ListenerSecurity`, rebuilt on reload).
- Failed logins are refused with CONNACK 0x04 (bad user name or password) or 0x05 (not
  authorised) after a slow-down that doubles with each recent failure from the same
  address or for the same user name, waited before the hash (`LoginThrottle`, in
  server/login_throttle.py, shared by all listeners and kept across reloads): guessing gets
  slow, and only the guesser waits. Failing addresses and user names are shed (0x03,
  MQTT 5 0x89) before they reach the hash pool. An unknown user name costs a dummy hash as
  dear as a known one's.
- With `use_identity_as_username` the TLS client certificate's common name is the user name.
- `rules()` returns the compiled ACL rules for a client, or None when the listener has no ACL
  file (everything allowed, except publishing to `$SYS`, which the protocol refuses always).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable

import gevent
from gevent.event import AsyncResult

from ..auth.acl import Acl, Rules, load_acl_file
from ..auth.passwords import (
    DEFAULT_ITERATIONS,
    DIGEST_BYTES,
    SALT_BYTES,
    PasswordHash,
    load_password_file,
)
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
from .hash_pool import HashPool, NotWanted, PoolBusy
from .login_throttle import LoginThrottle, delay_after

log = logging.getLogger("greenfly.security")

CACHE_LIMIT = 10_000
BUSY_PAUSE = 1.0  # seconds before a check the hash queue has no room for is refused


def _always() -> bool:
    return True


def dummy_hash(passwords: dict[str, PasswordHash]) -> PasswordHash:
    """What an unknown user name is checked against: a `$7$` hash of the iteration count
    most of the file's users have (so as dear as theirs), matching no password."""
    counts = Counter(e.iterations for e in passwords.values() if e.scheme == "7")
    iterations = counts.most_common(1)[0][0] if counts else DEFAULT_ITERATIONS
    return PasswordHash("7", iterations, os.urandom(SALT_BYTES), os.urandom(DIGEST_BYTES))


class ListenerSecurity:
    def __init__(self, listener: ListenerSection, anonymous: str, why: str,
                 passwords: dict[str, PasswordHash] | None, acl: Acl | None,
                 failures: LoginThrottle, pool: HashPool, patience: float = 10.0) -> None:
        self.listener = listener
        self.anonymous = anonymous  # config.schema's ANONYMOUS_*
        self.anonymous_why = why
        self.passwords = passwords
        self.acl = acl
        self.failures = failures
        self.pool = pool
        self.patience = patience  # seconds a check may wait for a hash thread
        self._dummy = dummy_hash(passwords or {})
        self._key = os.urandom(32)
        self._good: dict[bytes, str] = {}
        self._running: dict[bytes, AsyncResult] = {}
        self._rules: dict[tuple[str, str | None], Rules] = {}

    @classmethod
    def build(cls, config: Config, listener: ListenerSection, failures: LoginThrottle,
              pool: HashPool) -> ListenerSecurity:
        """Read the password and ACL files this listener uses; ConfigError if they are bad."""
        anonymous, why = anonymous_policy(config, listener)
        password_file = listener.password_file or config.broker.password_file
        acl_file = listener.acl_file or config.broker.acl_file
        passwords = load_password_file(password_file) if password_file else None
        acl = load_acl_file(acl_file) if acl_file else None
        return cls(listener, anonymous, why, passwords, acl, failures, pool,
                   config.broker.connect_timeout)

    # -- authentication ----------------------------------------------------------------------

    def authenticate(self, request: AuthRequest,
                     still_wanted: Callable[[], bool] | None = None) -> AuthResult:
        """Decide a CONNECT; blocks the calling greenlet (slow-down, hashing), not the hub:
        the connection calls it, as the protocol asks (core/protocol.py never waits).
        `still_wanted()` turns False once the client hung up: no hash is spent on it."""
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
        return self._check_password(username, password, host, still_wanted)

    def _check_password(self, username: str, password: bytes | None, host: str,
                        still_wanted: Callable[[], bool] | None) -> AuthResult:
        """The password step (server/login_throttle.py, server/hash_pool.py): a cached good
        check at once; otherwise shed, or wait the slow-down, then hash in the hash pool.
        An unknown user name is hashed against a dummy of the file's usual cost, so the
        time taken does not say which accounts exist."""
        assert self.passwords is not None
        entry = self.passwords.get(username)
        if password is None:
            return self._refuse(host, ReasonCode.BAD_USER_NAME_OR_PASSWORD, username,
                                "no password given")
        try:
            secret = password.decode("utf-8")
        except UnicodeDecodeError:
            return self._refuse(host, ReasonCode.BAD_USER_NAME_OR_PASSWORD, username,
                                "password is not UTF-8")
        # Imported at the first password, not at start-up: hashlib loads OpenSSL's libcrypto
        # (~3 ms of a cold start), which a broker without password files never needs.
        import hashlib
        import hmac

        key = hmac.new(self._key, username.encode() + b"\0" + password, hashlib.sha256).digest()
        if entry is not None and self._good.get(key) == entry.encode():
            self.failures.record(host, username, True)
            return AuthResult(ReasonCode.SUCCESS, username)
        attempt = self.failures.admit(host, username)
        if attempt.shed is not None:
            return self._shed(username, attempt.shed, attempt.delay)
        ok: bool | None = None
        wanted = still_wanted or _always
        shed: tuple[str, float] | None = None  # why, and the pause before saying so
        try:
            if attempt.delay:
                gevent.sleep(attempt.delay)
            ok = self._verify(key, entry or self._dummy, secret,
                              lambda: wanted() and not self.failures.stale(attempt))
        except NotWanted:
            if not wanted():
                return AuthResult(ReasonCode.SERVER_BUSY, username,
                                  "hung up before its password was checked (not hashed)")
            shed = (f"{host} failed meanwhile", -1.0)
        except PoolBusy as exc:
            shed = (str(exc), BUSY_PAUSE)
        finally:
            # An unknown user's dummy hash never matches, but say so rather than trust it.
            count = self.failures.finish(attempt, None if ok is None else
                                         bool(ok and entry is not None))
        if shed is not None:
            pause = shed[1] if shed[1] >= 0 else delay_after(max(self.failures.counts(
                host, username)))
            return self._shed(username, shed[0], pause)
        if entry is None or not ok:
            why = "unknown user" if entry is None else "wrong password"
            detail = f"{why} (failure {count} from {host}"
            detail += f", refused after {attempt.delay:g}s)" if attempt.delay else ")"
            return AuthResult(ReasonCode.BAD_USER_NAME_OR_PASSWORD, username, detail)
        if len(self._good) >= CACHE_LIMIT:
            self._good.clear()
        self._good[key] = entry.encode()
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

    def _shed(self, username: str, why: str, pause: float) -> AuthResult:
        """Refused unhashed, with 0x03 (MQTT 5: 0x89), after `pause`: an answer at once would
        bring the client straight back, and the event loop would spin on such refusals."""
        if pause:
            gevent.sleep(pause)
        return AuthResult(ReasonCode.SERVER_BUSY, username, f"login shed: {why}; refused "
                          f"unhashed after {pause:g}s")

    def _verify(self, key: bytes, entry: PasswordHash, secret: str,
                still_wanted: Callable[[], bool]) -> bool:
        """Hash in the hash pool; identical checks already running are waited for, not
        repeated, so a reconnect storm of one device costs one hash."""
        running = self._running.get(key)
        if running is not None:
            return running.get()
        running = self._running[key] = AsyncResult()
        try:
            ok = self.pool.run(entry.verify, secret, still_wanted, self.patience)
            running.set(ok)
            return ok
        except BaseException as exc:
            running.set_exception(exc)
            raise
        finally:
            del self._running[key]

    def _refuse(self, host: str, reason: ReasonCode, username: str | None,
                why: str) -> AuthResult:
        """A refusal that needs no hash, after the same slow-down as a wrong password."""
        delay = delay_after(max(self.failures.counts(host, username)))
        if delay:
            gevent.sleep(delay)
        count = self.failures.record(host, username, False)
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


def check_files(config: Config) -> None:
    """Load every password file, ACL file and certificate the configuration names, as start-up
    would, without listening (for `greenfly check`); ConfigError names the bad one."""
    failures, pool = LoginThrottle(), HashPool(1, 0)  # never used: nothing is checked here
    for listener in config.listeners:
        ListenerSecurity.build(config, listener, failures, pool)
        build_ssl_context(listener)

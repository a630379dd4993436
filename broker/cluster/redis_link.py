"""One node's line to Redis, from gevent without monkey patching: commands, pipelines, Lua
scripts, a group-committing writer and a pub/sub subscriber.

redis-py does the protocol (and hiredis the parsing, when installed); redis_socket.py gives
it gevent sockets. redis-py's own client, pool and pipeline classes are not used: they hold
threading locks across I/O and retry with `time.sleep`, both of which would stop the hub.
A connection here is used by one greenlet at a time and thrown away after any I/O error, so
no half-read reply is ever handed to the next command.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import gevent
import gevent.event
import gevent.lock
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from .redis_socket import GeventConnection, GeventSSLConnection, GeventUnixConnection

log = logging.getLogger("greenfly.cluster")

Conn = GeventConnection | GeventUnixConnection
# An I/O failure: the connection is closed and the caller sees RedisUnavailable.
LINK_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
BACKOFF_FIRST, BACKOFF_CAP = 0.1, 2.0
MAX_CONNECTIONS = 64  # call()/pipeline() at once; more wait for a free connection


class RedisUnavailable(Exception):
    """Redis could not be reached or answered with a connection error."""


def _sha_of(command: Sequence[Any]) -> str | None:
    """The script digest of an EVALSHA command, else None."""
    if len(command) < 2:
        return None
    name, sha = command[0], command[1]
    name = name.decode() if isinstance(name, bytes) else str(name)
    if name.upper() != "EVALSHA":
        return None
    return sha.decode() if isinstance(sha, bytes) else str(sha)


BLOCKING_LAST_ARG = {"BLPOP", "BRPOP", "BRPOPLPUSH", "BLMOVE", "BZPOPMIN", "BZPOPMAX"}


def _blocks_for(command: Sequence[Any]) -> float | None:
    """How long a blocking command may legitimately wait before it answers (seconds; None:
    forever), so its reply is not taken for a dead connection; 0.0 for the rest."""
    if not command:
        return 0.0
    first = command[0]
    name = (first.decode() if isinstance(first, bytes) else str(first)).upper()
    if name not in BLOCKING_LAST_ARG and name not in ("XREAD", "XREADGROUP"):
        return 0.0  # the usual case; its arguments may be any bytes (records, payloads)
    words = [word.decode(errors="replace") if isinstance(word, bytes) else str(word)
             for word in command]
    try:
        if name in BLOCKING_LAST_ARG:
            seconds = float(words[-1])
        elif name in ("XREAD", "XREADGROUP") and "BLOCK" in (w.upper() for w in words):
            upper = [w.upper() for w in words]
            seconds = float(words[upper.index("BLOCK") + 1]) / 1000
        else:
            return 0.0
    except (ValueError, IndexError):
        return 0.0
    return None if seconds == 0 else seconds


class RedisLink:
    """Commands to one Redis (the URL of [cluster] redis_url) over a small pool of gevent
    connections; `timeout` bounds connecting and each reply."""

    def __init__(self, url: str, password: str | None = None, name: str = "greenfly",
                 timeout: float = 5.0) -> None:
        settings = parse_url(url)
        scheme = url.split("://", 1)[0]
        self._cls: type[Conn] = (GeventUnixConnection if scheme == "unix" else
                                 GeventSSLConnection if scheme == "rediss" else GeventConnection)
        settings.pop("connection_class", None)
        if password is not None:
            settings["password"] = password
        # RESP2 (redis-py 8 asks for RESP3 by default): pub/sub messages are then plain
        # replies on the subscriber's connection, and Redis 5/6 answer the same way.
        self._settings = dict(settings, client_name=name, socket_connect_timeout=timeout,
                              retry=Retry(NoBackoff(), 0), protocol=2)
        self.url = url
        self.timeout = timeout
        self._idle: list[Conn] = []
        self._slots = gevent.lock.BoundedSemaphore(MAX_CONNECTIONS)
        self._scripts: dict[str, str] = {}  # sha1 -> source, for NOSCRIPT
        self._closed = False

    def connection(self, socket_timeout: float | None) -> Conn:
        """A new, unconnected connection (the Subscriber keeps its own)."""
        return self._cls(**self._settings, socket_timeout=socket_timeout)

    def call(self, *args: Any) -> Any:
        """One command; raises its ResponseError, or RedisUnavailable on a connection error."""
        result = self.pipeline([args])[0]
        if isinstance(result, ResponseError):
            raise result
        return result

    def pipeline(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """The commands in one round trip, not as a transaction; a command's error comes back
        as its exception object in the list."""
        if not commands:
            return []
        with self._slots:
            conn = self._take()
            try:
                results = self._exchange(conn, commands)
            except LINK_ERRORS as exc:
                conn.disconnect()
                raise RedisUnavailable(f"Redis at {self.url}: {exc}") from exc
            except BaseException:
                # Killed mid-reply (GreenletExit, gevent.Timeout): the rest of the reply
                # would be read by the next command, so the connection goes.
                conn.disconnect()
                raise
            self._give(conn)
            return results

    def script(self, source: str) -> Script:
        sha = hashlib.sha1(source.encode()).hexdigest()
        self._scripts[sha] = source
        return Script(self, sha)

    def subscriber(self, on_message: Callable[[bytes, bytes], None],
                   on_reconnect: Callable[[], None]) -> Subscriber:
        return Subscriber(self, on_message, on_reconnect)

    def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.disconnect()

    def _take(self) -> Conn:
        if self._closed:
            raise RedisUnavailable("the Redis link is closed")
        while self._idle:
            conn = self._idle.pop()
            try:
                # A zero-timeout poll: an idle connection has nothing to read unless Redis
                # closed it (restarted, timeout, CLIENT KILL). Such a connection was dead
                # before anything was sent on it, so a fresh one is taken instead of
                # reporting Redis unavailable when it is back.
                stale = conn.can_read(timeout=0)
            except LINK_ERRORS:
                stale = True
            if not stale:
                return conn
            conn.disconnect()
        return self.connection(self.timeout)

    def _give(self, conn: Conn) -> None:
        if self._closed:
            conn.disconnect()
        else:
            self._idle.append(conn)

    def _exchange(self, conn: Conn, commands: Sequence[Sequence[Any]],
                  retry: bool = True) -> list[Any]:
        """Send and read back. Scripts this connection has not loaded yet are loaded in the
        same round trip first (Redis forgets them on restart, which is also when a connection
        is new), so NOSCRIPT, whose resend puts those commands after the rest of the batch, is
        left to a SCRIPT FLUSH under a live connection."""
        loads: list[str] = []
        for command in commands:
            sha = _sha_of(command)
            if sha in self._scripts and sha not in conn.loaded_scripts and sha not in loads:
                loads.append(sha)
        wire = [("SCRIPT", "LOAD", self._scripts[sha]) for sha in loads] + list(commands)
        conn.send_packed_command(conn.pack_commands(wire))
        results = []
        for command in wire:
            blocks = _blocks_for(command)
            try:
                results.append(conn.read_response() if blocks == 0.0 else conn.read_response(
                    timeout=None if blocks is None else blocks + self.timeout))
            except ResponseError as exc:
                results.append(exc)
        failed = {sha: reply for sha, reply in zip(loads, results, strict=False)
                  if isinstance(reply, ResponseError)}  # a script that does not compile
        conn.loaded_scripts.update(sha for sha in loads if sha not in failed)
        results = results[len(loads):]
        for i, reply in enumerate(results):
            sha = _sha_of(commands[i])
            if isinstance(reply, NoScriptError) and sha is not None and sha in failed:
                results[i] = failed[sha]  # say why, not just NOSCRIPT
        again = [i for i, reply in enumerate(results)
                 if isinstance(reply, NoScriptError) and _sha_of(commands[i]) in self._scripts]
        if again and retry:
            conn.loaded_scripts.clear()
            retried = self._exchange(conn, [commands[i] for i in again], retry=False)
            for i, reply in zip(again, retried, strict=True):
                results[i] = reply
        return results


class Script:
    """A Lua script run by digest: EVALSHA, with SCRIPT LOAD and a resend on NOSCRIPT (also
    when it is one command of a pipeline or a GroupWriter batch)."""

    def __init__(self, link: RedisLink, sha: str) -> None:
        self.link = link
        self.sha = sha

    def command(self, keys: Sequence[Any], args: Sequence[Any]) -> tuple[Any, ...]:
        return ("EVALSHA", self.sha, len(keys), *keys, *args)

    def __call__(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        return self.link.call(*self.command(keys, args))


NOT_READY = ("LOADING", "BUSY", "TRYAGAIN", "READONLY", "MASTERDOWN", "OOM", "NOREPLICAS",
             "MISCONF")


def _not_ready(result: Any) -> bool:
    """A per-command error that says Redis cannot take writes now, not that the command is
    wrong: the write is to be made later, not reported as done. (redis-py's parser strips
    the code from the message of the errors it has a class for, and keeps it in
    `status_code`.)"""
    if not isinstance(result, Exception):
        return False
    code = getattr(result, "status_code", None) or str(result).split(" ", 1)[0]
    return code in NOT_READY


class GroupWriter:
    """Group commit: what is submitted while a pipeline is in flight (or during the hub
    iteration that woke the writer) goes out as the next pipeline, so concurrent writers share
    one round trip and, with `appendfsync always`, one fsync.

    While Redis is unreachable the batch is kept and resent, in order, with a backoff of
    0.1 s doubling to 2 s, for as long as it takes: nothing submitted is dropped. `up` says
    which it is, for the broker to decide what to refuse meanwhile. A batch whose connection
    broke mid-flight may have been applied in part, and is resent whole: the commands must be
    safe to apply twice (fenced Lua scripts, ids that dedupe)."""

    def __init__(self, link: RedisLink, on_state: Callable[[bool], None] | None = None) -> None:
        self.link = link
        self.on_state = on_state
        self.up = True
        self.batches = 0  # pipelines that succeeded (the group-commit tests count them)
        self._pending: list[tuple[tuple[Any, ...], Callable[[Any], None]]] = []
        self._wake = gevent.event.Event()
        self._closing = False
        self._greenlet = gevent.spawn(self._run)

    def submit(self, command: Sequence[Any], callback: Callable[[Any], None]) -> None:
        """Queue one command; `callback(result)` later, in the writer greenlet, in submit
        order (the result may be the command's ResponseError). Never blocks."""
        if self._closing:
            raise RuntimeError("GroupWriter is closed")
        self._pending.append((tuple(command), callback))
        self._wake.set()

    def close(self) -> None:
        """Write what is pending if Redis answers within the link's timeout, then stop."""
        self._closing = True
        self._wake.set()
        self._greenlet.join(self.link.timeout)
        self._greenlet.kill()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if not self._pending:
                if self._closing:
                    return
                continue
            batch, self._pending = self._pending, []
            results = self._write(batch)
            if results is None:
                return  # closing while Redis is down
            for (_command, callback), result in zip(batch, results, strict=True):
                try:
                    callback(result)
                except Exception:
                    log.exception("a Redis write callback failed")
            if self._pending or self._closing:
                self._wake.set()

    def _write(self, batch: list[tuple[tuple[Any, ...], Callable[[Any], None]]]
               ) -> list[Any] | None:
        delay = BACKOFF_FIRST
        while True:
            try:
                results = self.link.pipeline([command for command, _ in batch])
            except RedisUnavailable as exc:
                if self._closing:
                    log.warning("Redis unreachable at close: %d writes not made", len(batch))
                    return None
                self._held(batch, "Redis unreachable, writes held and retried: %s", exc, delay)
                delay = min(delay * 2, BACKOFF_CAP)
                continue
            busy = next((r for r in results if _not_ready(r)), None)
            if busy is not None:
                # Redis is up but will not take writes yet (loading its AOF after a restart,
                # a replica, out of memory): as unavailable, the whole batch again later.
                # Anything it did apply is applied again, which the scripts allow.
                self._held(batch, "Redis refuses writes for now, held and retried: %s", busy,
                           delay)
                delay = min(delay * 2, BACKOFF_CAP)
                continue
            self.batches += 1
            if not self.up:
                self.up = True
                log.warning("Redis reachable again; held writes made")
                self._notify(True)
            return results

    def _held(self, batch: list[tuple[tuple[Any, ...], Callable[[Any], None]]], why: str,
              cause: object, delay: float) -> None:
        """Say once that writes wait, wait `delay`, and take what came in meanwhile into the
        retry, behind the batch: order is kept."""
        if self.up:
            self.up = False
            log.warning(why, cause)
            self._notify(False)
        gevent.sleep(delay)
        batch.extend(self._pending)
        self._pending = []

    def _notify(self, up: bool) -> None:
        if self.on_state is not None:
            try:
                self.on_state(up)
            except Exception:
                log.exception("GroupWriter on_state(%s) failed", up)


class Subscriber:
    """One pub/sub connection read by a greenlet of its own. It reconnects by itself (0.1 s
    doubling to 2 s), subscribes again to every channel, and then calls `on_reconnect()` in a
    new greenlet: messages published while it was away are lost, so the caller reloads.

    subscribe() and unsubscribe() send without waiting for Redis's confirmation; a barrier()
    after them returns once they are in force. An idle connection is checked with a PING
    every `link.timeout` seconds, so a dead Redis is noticed even without traffic."""

    def __init__(self, link: RedisLink, on_message: Callable[[bytes, bytes], None],
                 on_reconnect: Callable[[], None]) -> None:
        self.link = link
        self.on_message = on_message
        self.on_reconnect = on_reconnect
        # Called when the connection is lost (before reconnecting): the first sign of a Redis
        # gone, often long before a write would find out.
        self.on_lost: Callable[[], None] | None = None
        self.channels: set[bytes] = set()
        self._conn: Conn | None = None
        self._send_lock = gevent.lock.Semaphore()
        self._barriers: dict[bytes, gevent.event.AsyncResult[bool]] = {}
        self._tokens = 0
        self._ready = gevent.event.Event()  # connected (and subscribed, or about to be)
        self._announce = False
        self._closed = False
        self._greenlet = gevent.spawn(self._run)

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def subscribe(self, *channels: bytes) -> None:
        with self._send_lock:
            new = [channel for channel in channels if channel not in self.channels]
            self.channels.update(new)
            if new:
                self._send("SUBSCRIBE", *new)

    def unsubscribe(self, *channels: bytes) -> None:
        with self._send_lock:
            gone = [channel for channel in channels if channel in self.channels]
            self.channels.difference_update(gone)
            if gone:
                self._send("UNSUBSCRIBE", *gone)

    def barrier(self, timeout: float = 1.0) -> bool:
        """PING through the subscription and wait for its PONG: every message published (by
        anyone) before this call has then been handed to on_message. False on timeout, or
        when the connection is not there (within `timeout`) or is lost meanwhile."""
        deadline = time.monotonic() + timeout
        if not self._ready.wait(timeout):
            return False
        self._tokens += 1
        token = b"gf-barrier-%d" % self._tokens
        done: gevent.event.AsyncResult[bool] = gevent.event.AsyncResult()
        self._barriers[token] = done
        try:
            with self._send_lock:
                if not self._send("PING", token):
                    return False
            return bool(done.wait(max(0.0, deadline - time.monotonic())))
        finally:
            self._barriers.pop(token, None)

    def close(self) -> None:
        self._closed = True
        self._greenlet.kill()
        self._drop()

    def _send(self, *args: Any) -> bool:
        """Send on the live connection (the reader notices a failure); False without one."""
        conn = self._conn
        if conn is None:
            return False
        try:
            conn.send_command(*args, check_health=False)
        except LINK_ERRORS:
            return False
        return True

    def _run(self) -> None:
        delay, first = BACKOFF_FIRST, True
        while not self._closed:
            conn = self.link.connection(self.link.timeout)
            try:
                conn.connect()
                with self._send_lock:
                    self._conn = conn
                    if self.channels:
                        self._send("SUBSCRIBE", *self.channels)
                    self._send("PING", b"gf-resubscribed")
                self._ready.set()
                if not first:
                    log.info("Redis subscription back: %d channels", len(self.channels))
                self._announce = not first  # on_reconnect once resubscribed (its PONG)
                first, delay = False, BACKOFF_FIRST
                self._read(conn)
            except LINK_ERRORS as exc:
                if self._conn is not None:
                    log.warning("Redis subscription lost, reconnecting: %s", exc)
                    if self.on_lost is not None:
                        self.on_lost()
            self._drop()
            gevent.sleep(delay)
            delay = min(delay * 2, BACKOFF_CAP)

    def _read(self, conn: Conn) -> None:
        pinged = False
        while True:
            try:
                reply = conn.read_response(disconnect_on_error=False)
            except RedisTimeoutError:
                if pinged:
                    raise  # no answer to the idle PING either: the connection is dead
                with self._send_lock:
                    self._send("PING", b"gf-idle")
                pinged = True
                continue
            pinged = False
            kind = reply[0] if isinstance(reply, list) else b"pong"
            if kind == b"message":
                try:
                    self.on_message(reply[1], reply[2])
                except Exception:
                    log.exception("a Redis subscription callback failed")
            elif kind == b"pong":
                # Subscribed: [b"pong", token]; with no channel: the token as a bulk string.
                token = reply[1] if isinstance(reply, list) else reply
                if token == b"gf-resubscribed" and self._announce:
                    gevent.spawn(self._call_on_reconnect)
                elif token in self._barriers:
                    self._barriers[token].set(True)

    def _call_on_reconnect(self) -> None:
        try:
            self.on_reconnect()
        except Exception:
            log.exception("Redis subscription on_reconnect failed")

    def _drop(self) -> None:
        self._ready.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.disconnect()
        for waiting in list(self._barriers.values()):
            waiting.set(False)

"""Byte-stream transports: the one interface a `Connection` reads from and writes to.

`Transport` declares everything `Connection` and `Outbox` (link/) use of a transport, so
they never reach for its socket or ask its type: `recv()` returns the next MQTT bytes (b""
when the peer closed the stream); `sendall(data)` writes MQTT bytes, `try_send(data)` without
blocking; `fileno()` is what a parked connection's read watcher waits on; `close(reason_code)`
ends the stream, and a transport that has a close handshake of its own (WebSocket, in
`websocket.py`) says why with it, mapped from the MQTT reason code. Sockets never get a
timeout: deadlines (CONNECT, keepalive) are enforced by the server's watchdog, which closes
the transport and so wakes the blocked reader. Keeping framing such as WebSocket behind this
interface means keepalive, takeover and will logic exist once, in `Connection`, whatever
the transport.
"""

from __future__ import annotations

import _socket
import contextlib
import errno
import os
import socket as stdlib_socket
import sys
from typing import Any, Protocol, runtime_checkable

import gevent
from gevent import Timeout, socket

from .arrival import arrival_order

RECV_SIZE = 65_536


class Idle(Exception):
    """Nothing arrived within the idle timeout given to `recv`; no byte was taken."""



LINGER = 2.0  # seconds a closing connection reads what the client still sends (linger_close)
@runtime_checkable
class Transport(Protocol):
    """A byte stream carrying MQTT, whatever frames it (TCP, TLS, WebSocket)."""

    address: str  # the peer, as logs show it ('host:port', '[v6]:port')

    def recv(self, idle: Timeout | None = None) -> bytes:
        """The next MQTT bytes; b"" when the stream ended. `idle` is a `Timeout` raising
        `Idle`, started only around the wait for the socket and cancelled after it."""
        ...

    @property
    def unbuffered(self) -> bool:
        """True when every received byte stays in the socket until `recv` takes it, so a
        read watcher on the socket sees all there is (TLS and WebSocket keep bytes of their
        own: a decrypted record, the rest of a frame)."""
        ...

    def sendall(self, data: bytes) -> None:
        ...

    def try_send(self, data: bytes) -> bool:
        """Send `data` without blocking: what the socket does not take now stays in the
        transport (`unsent`) and goes first on the next `sendall`. False when this transport
        cannot send without blocking at the moment; `data` is then not taken at all."""
        ...

    @property
    def unsent(self) -> bool:
        """True while part of a `try_send` still waits for a `sendall` to finish it."""
        ...

    def fileno(self) -> int:
        """The descriptor a read watcher waits on while the connection has no reader (only
        for an `unbuffered` transport or one whose buffer is empty); -1 once closed."""
        ...

    def close(self, reason_code: int = 0) -> None:
        """End the stream (with a close handshake where the framing has one); from any
        greenlet, never blocking for long."""
        ...

    def linger_close(self, reason_code: int = 0) -> None:
        """`close`, for the connection's own reader after it wrote a DISCONNECT: what the
        client still sends is read and ignored for a moment, not answered with a reset."""
        ...


def write_nonblocking(fd: int, data: bytes) -> int:
    """How much of `data` a non-blocking socket took right now (never waits)."""
    try:
        return os.write(fd, data)
    except (BlockingIOError, InterruptedError):
        return 0


def adopt_socket(sock: socket.socket) -> int:
    """Tune an accepted socket for MQTT (TCP_NODELAY: small packets go out at once) and
    return the descriptor a non-blocking write may use directly: -1 for TLS, whose record
    layer must see every byte."""
    with contextlib.suppress(OSError):  # not a TCP socket (a socketpair): nothing to tune
        sock.setsockopt(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_NODELAY, 1)
    return -1 if is_tls(sock) else sock.fileno()


def is_tls(sock: socket.socket) -> bool:
    """True for a TLS socket. gevent.ssl is imported only where TLS is configured (net/tls.py):
    until then no socket can be one, and a broker without TLS never loads ssl."""
    tls = sys.modules.get("gevent.ssl")
    return tls is not None and isinstance(sock, tls.SSLSocket)


def recv_within(sock: socket.socket, idle: Timeout | None) -> bytes:
    """One `recv`, with `idle` (if any) running only while it waits for the socket."""
    if idle is None:
        return sock.recv(RECV_SIZE)
    idle.start()
    try:
        return sock.recv(RECV_SIZE)
    finally:
        idle.cancel()


def send_all(sock: socket.socket, data: bytes) -> None:
    """`sendall` without gevent's per-call `getsockopt(SO_SNDBUF)`: a syscall per write that
    the profile of a paced stream showed for every message."""
    sent = sock.send(data)
    if sent == len(data):
        return
    view = memoryview(data)
    while sent < len(view):
        sent += sock.send(view[sent:])


def format_address(address: object) -> str:
    """'host:port' for an IPv4 peer, '[host]:port' for IPv6, the raw value otherwise."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)


class TcpTransport:
    """Plain TCP (and, wrapped, TLS): MQTT bytes straight on the socket.

    A plain TCP read that finds nothing waits on a read watcher of its own whose callback
    goes through the hub's `ArrivalOrder` (net/arrival.py), so a reader blocked in `recv`
    takes its turn in the order the bytes came, with the parked readers woken at the same
    time. TLS reads stay gevent's: its record layer reads for itself.

    A plain TCP transport keeps the bare `_socket.socket`, not gevent's wrapper: reads and
    writes go through the descriptor with watchers made while one waits, so the wrapper's
    two io watchers, never used here, are not kept by every idle connection (336 bytes of
    2.1 KiB). The descriptor stays non-blocking as gevent left it; the bare socket is only
    shut down and closed."""

    __slots__ = ("_fd", "_order", "_sock", "_tail", "_waiting", "_watcher", "_writing",
                 "address")

    def __init__(self, sock: socket.socket, address: object) -> None:
        self.address = format_address(address)
        self._fd = adopt_socket(sock)  # -1 for TLS (then always sendall), and once closed
        self._sock: Any = sock
        if self._fd >= 0:
            # The socket gevent's wrapper holds (its `_sock`), taken as it is: `detach()` and
            # a new socket object cost ~10 µs of a ~90 µs connect. The wrapper, dropped with
            # the accepting greenlet's frame, closes nothing when it goes.
            bare = getattr(sock, "_sock", None)
            self._sock = bare if isinstance(bare, _socket.socket) else _socket.socket(
                sock.family, sock.type, sock.proto, sock.detach())
        self._tail = b""  # what a try_send could not write yet
        self._order = arrival_order()
        self._watcher: Any = None  # the read watcher, made at the first wait
        self._waiting: Any = None  # the greenlet waiting for it, while one does
        self._writing: Any = None  # the write watcher while a sendall waits for room

    def recv(self, idle: Timeout | None = None) -> bytes:
        while True:
            fd = self._fd
            if fd < 0:  # TLS, or closed (the socket's own recv then raises EBADF)
                return recv_within(self._sock, idle)
            try:
                return os.read(fd, RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                pass
            self._wait_readable(idle)

    def _wait_readable(self, idle: Timeout | None) -> None:
        """Until the socket is readable and this reader's turn comes, or `idle` raises.
        `idle` runs only here: a read that finds bytes costs no timer."""
        watcher = self._watcher
        if watcher is None:
            watcher = self._watcher = self._order.loop.io(self._fd, 1)
        hub = gevent.get_hub()
        self._waiting = gevent.getcurrent()
        watcher.start(self._readable)
        if idle is not None:
            idle.start()
        try:
            hub.switch()
        except Idle:
            self._drop_watcher()  # the connection parks: it keeps no watcher of ours
            raise
        finally:
            if idle is not None:
                idle.cancel()
            self._waiting = None
            watcher = self._watcher
            if watcher is not None:  # None: closed meanwhile, or parking
                watcher.stop()

    def _readable(self) -> None:
        """The read watcher's callback, in the hub."""
        self._watcher.stop()  # level-triggered: once per wait is enough
        self._order.ready(self._resume)

    def _resume(self) -> None:
        """In the hub, in arrival order, or after `close`: the waiting reader goes on (it may
        have gone meanwhile: `idle` raised, or a close woke it first)."""
        reader = self._waiting
        if reader is not None:
            reader.switch()

    def _drop_watcher(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()
            watcher.close()

    def _release(self) -> None:
        """Before the socket closes (libev must not watch a dead descriptor): no more reads
        or writes of our own; a reader waiting in one is woken to find the socket closed, a
        writer gets EBADF (as from gevent's socket closed under it)."""
        self._fd = -1
        self._drop_watcher()
        if self._waiting is not None and self._waiting is not gevent.getcurrent():
            self._order.loop.run_callback(self._resume)
        writing, self._writing = self._writing, None
        if writing is not None:
            gevent.get_hub().cancel_wait(writing, OSError(errno.EBADF, "socket closed"), True)

    def sendall(self, data: bytes) -> None:
        tail = self._tail
        if tail:
            self._tail = b""
            self._send_all(tail)
        if data:
            self._send_all(data)

    def _send_all(self, data: bytes) -> None:
        if self._fd < 0 and not isinstance(self._sock, _socket.socket):
            send_all(self._sock, data)  # TLS: the record layer writes
            return
        sent, view = 0, None
        while True:
            fd = self._fd
            if fd < 0:
                raise OSError(errno.EBADF, "socket closed")
            try:
                sent += os.write(fd, view[sent:] if view is not None else data)
            except (BlockingIOError, InterruptedError):
                self._wait_writable(fd)
                continue
            if sent == len(data):
                return
            if view is None:
                view = memoryview(data)

    def _wait_writable(self, fd: int) -> None:
        hub = gevent.get_hub()
        watcher = self._writing = hub.loop.io(fd, 2)
        try:
            hub.wait(watcher)
        finally:
            if self._writing is watcher:  # not cancelled by a close
                self._writing = None
                watcher.close()

    @property
    def unbuffered(self) -> bool:
        return self._fd >= 0  # plain TCP; TLS keeps decrypted bytes of its own

    def try_send(self, data: bytes) -> bool:
        if self._fd < 0 or self._tail:
            return False
        self._tail = data[write_nonblocking(self._fd, data):]
        return True

    @property
    def unsent(self) -> bool:
        return bool(self._tail)

    def fileno(self) -> int:
        fileno: int = self._sock.fileno()
        return fileno

    def close(self, reason_code: int = 0) -> None:
        self._release()
        with contextlib.suppress(OSError):  # already gone: nothing left to shut down
            self._sock.shutdown(stdlib_socket.SHUT_RDWR)
        self._sock.close()

    def linger_close(self, reason_code: int = 0) -> None:
        """Close after a DISCONNECT the client may not have read yet: stop writing, then read
        and ignore what still comes until the client closes or `LINGER` seconds pass.

        A client that was still sending when the broker said goodbye (PUBRELs answering the
        PUBRECs ahead of a DISCONNECT 0x93) would otherwise have those bytes answered by a
        reset from the kernel, and its next write fails before it reads why it was
        disconnected. Called from the connection's reader, which ends right after, so no
        other greenlet reads this socket meanwhile."""
        self._release()
        with contextlib.suppress(OSError):
            self._sock.shutdown(stdlib_socket.SHUT_WR)
        gevent.spawn(self._drain_then_close)

    def _drain_then_close(self) -> None:
        # Timeout(seconds, False) ends the block silently (gevent's documented form; the
        # stubs know only an exception there).
        sock = self._sock
        with contextlib.suppress(OSError), Timeout(LINGER, False):  # type: ignore[arg-type]
            if isinstance(sock, _socket.socket):  # plain TCP: the bare, non-blocking socket
                fd, hub = sock.fileno(), gevent.get_hub()
                while True:
                    try:
                        if not os.read(fd, RECV_SIZE):
                            break
                    except (BlockingIOError, InterruptedError):
                        watcher = hub.loop.io(fd, 1)
                        try:
                            hub.wait(watcher)
                        finally:
                            watcher.close()
            else:
                while sock.recv(65_536):
                    pass
        sock.close()

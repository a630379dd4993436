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

import contextlib
import os
import socket as stdlib_socket
from typing import Protocol, runtime_checkable

import gevent
from gevent import Timeout, socket
from gevent.ssl import SSLSocket

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
    return -1 if isinstance(sock, SSLSocket) else sock.fileno()


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
    """Plain TCP (and, wrapped, TLS): MQTT bytes straight on the socket."""

    __slots__ = ("_fd", "_sock", "_tail", "address")

    def __init__(self, sock: socket.socket, address: object) -> None:
        self._sock = sock
        self.address = format_address(address)
        self._fd = adopt_socket(sock)  # -1 for TLS: then always sendall
        self._tail = b""  # what a try_send could not write yet

    def recv(self, idle: Timeout | None = None) -> bytes:
        return recv_within(self._sock, idle)

    def sendall(self, data: bytes) -> None:
        tail = self._tail
        if tail:
            self._tail = b""
            send_all(self._sock, tail)
        if data:
            send_all(self._sock, data)

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
        return self._sock.fileno()

    def close(self, reason_code: int = 0) -> None:
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
        with contextlib.suppress(OSError):
            self._sock.shutdown(stdlib_socket.SHUT_WR)
        gevent.spawn(self._drain_then_close)

    def _drain_then_close(self) -> None:
        with contextlib.suppress(OSError), Timeout(LINGER, False):
            while self._sock.recv(65_536):
                pass
        self._sock.close()

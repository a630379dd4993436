"""Byte-stream transports: the one interface a `Connection` reads from and writes to.

`recv()` returns the next MQTT bytes (b"" when the peer closed the stream); `sendall(data)`
writes MQTT bytes; `close(reason_code)` ends the stream, and a transport that has a close
handshake of its own (WebSocket, in `websocket.py`) says why with it, mapped from the MQTT
reason code. Sockets never get a timeout: deadlines (CONNECT, keepalive) are enforced by the
server's watchdog, which closes the transport and so wakes the blocked reader. Keeping
framing such as WebSocket behind this interface means keepalive, takeover and will logic
exist once, in `Connection`, whatever the transport.
"""

from __future__ import annotations

import contextlib
import socket as stdlib_socket
from typing import Protocol

from gevent import socket

RECV_SIZE = 65_536


class Transport(Protocol):
    address: str

    def recv(self) -> bytes:
        ...

    def sendall(self, data: bytes) -> None:
        ...

    def close(self, reason_code: int = 0) -> None:
        ...


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

    __slots__ = ("address", "sock")

    def __init__(self, sock: socket.socket, address: object) -> None:
        self.sock = sock
        self.address = format_address(address)
        with contextlib.suppress(OSError):  # not a TCP socket (a socketpair): nothing to tune
            sock.setsockopt(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_NODELAY, 1)

    def recv(self) -> bytes:
        return self.sock.recv(RECV_SIZE)

    def sendall(self, data: bytes) -> None:
        send_all(self.sock, data)

    def close(self, reason_code: int = 0) -> None:
        with contextlib.suppress(OSError):  # already gone: nothing left to shut down
            self.sock.shutdown(stdlib_socket.SHUT_RDWR)
        self.sock.close()

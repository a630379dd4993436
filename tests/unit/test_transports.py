"""Transports keep to the `Transport` interface (all that link/ may use of them), and the
WebSocket close handshake ends quietly on what can happen there, and only on that."""

from __future__ import annotations

import struct

import gevent
import pytest
from gevent import socket

from broker.errors import ReasonCode
from broker.net.transport import Idle, TcpTransport, Transport
from broker.net.websocket import WebSocketTransport


def test_tcp_and_websocket_transports_declare_what_connections_use():
    for make in (lambda s: TcpTransport(s, ("127.0.0.1", 1)),
                 lambda s: WebSocketTransport(s, "127.0.0.1:1", 1000)):
        ours, theirs = socket.socketpair()
        fd = ours.fileno()  # a plain TCP transport keeps the descriptor, not gevent's socket
        transport = make(ours)
        assert isinstance(transport, Transport)
        assert transport.fileno() == fd >= 0
        theirs.close()  # the peer is gone: no close handshake to wait for
        transport.close()
        assert transport.fileno() == -1  # a parked connection then has nothing to watch


class PeerSocket:
    """A socket whose peer answers our close frame with `answer` (bytes or an exception)."""

    def __init__(self, answer: bytes | BaseException) -> None:
        self.answer = answer
        self.sent: list[bytes] = []
        self.closed = False

    def setsockopt(self, *args: object) -> None:
        pass

    def fileno(self) -> int:
        return -1

    def sendall(self, data: bytes) -> None:
        self.sent.append(bytes(data))

    def recv(self, size: int) -> bytes:
        if isinstance(self.answer, BaseException):
            raise self.answer
        data, self.answer = self.answer, b""
        return data

    def shutdown(self, how: int) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def masked(opcode: int, payload: bytes) -> bytes:
    key = b"\x01\x02\x03\x04"
    return bytes((0x80 | opcode, 0x80 | len(payload))) + key + bytes(
        b ^ key[i % 4] for i, b in enumerate(payload))


@pytest.mark.parametrize("answer", [
    ConnectionResetError(104, "Connection reset by peer"),  # the peer left
    masked(0x1, b"text after close"),  # a framing error in its answer
    masked(0x8, struct.pack("!H", 1000)),  # the proper answer
])
def test_websocket_close_handshake_ends_on_what_can_happen_there(answer):
    sock = PeerSocket(answer)
    transport = WebSocketTransport(sock, "127.0.0.1:1", 1000)
    transport.close(ReasonCode.SUCCESS)  # from the reader: waits for the answer inline
    assert sock.sent == [b"\x88\x02\x03\xe8"]  # our close frame, code 1000
    assert sock.closed


def test_websocket_close_handshake_lets_a_bug_through():
    sock = PeerSocket(ZeroDivisionError("a bug, not the peer"))
    transport = WebSocketTransport(sock, "127.0.0.1:1", 1000)
    with pytest.raises(ZeroDivisionError):  # for the connection's handler to log
        transport.close(ReasonCode.SUCCESS)


def test_a_tcp_reader_blocked_in_recv_wakes_for_bytes_for_idle_and_for_a_close():
    # A plain TCP recv waits on a watcher of its own (net/arrival.py), not gevent's: bytes,
    # the idle timeout and a close from another greenlet (the watchdog, a takeover) must
    # each still end the wait.
    ours, theirs = socket.socketpair()
    transport = TcpTransport(ours, ("127.0.0.1", 1))
    reader = gevent.spawn(transport.recv)
    gevent.sleep(0.01)
    theirs.sendall(b"\xc0\x00")
    assert reader.get(timeout=2) == b"\xc0\x00"

    with pytest.raises(Idle):
        transport.recv(gevent.Timeout(0.01, Idle))

    reader = gevent.spawn(transport.recv)
    gevent.sleep(0.01)
    assert not reader.ready()
    gevent.spawn(transport.close).join()
    with pytest.raises(OSError):
        reader.get(timeout=2)
    theirs.close()

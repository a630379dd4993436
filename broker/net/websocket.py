"""MQTT over WebSocket: the transport that carries MQTT bytes in binary frames.

`ws_handshake.py` makes one from an upgraded socket; `Connection` then uses it exactly as it
uses TCP, so keepalive, takeover and wills are not repeated here.

Rules:
- Reading: one `recv()` reads a big chunk and returns the MQTT bytes of every complete frame
  in it, so one packet may span frames and one frame may hold many packets. The frames are
  split by `ws_frames.FrameReader` (sans-I/O): plain binary frames (what clients send) come
  back unmasked, every other frame (control, fragmented, text, malformed) whole, and goes
  to wsproto, which judges it; its events keep their place in the byte order.
- Pings are answered from the reader; a text frame is closed with 1003 [MQTT-6.0.0-1]; a
  frame or message over `max_packet_size` with 1009; a framing error with wsproto's code.
- Writing: `sendall(data)` sends one binary frame (the writer batches, so one frame per
  drained batch). Server frames are unmasked and carry no extension, so the header is laid
  out by `ws_frames.binary_frame` rather than copying the payload through wsproto twice.
- Every socket write holds `_lock`, so a pong or close frame never lands inside a data frame.
  A write cut short (a killed writer) leaves `_partial` set: no frame may follow it, so the
  close then skips the close frame and just drops the socket.
- `close(reason_code)` sends a close frame whose code comes from the MQTT reason
  (`close_code`), then waits up to `CLOSE_TIMEOUT` for the peer's close frame: inline when
  called from the reader, otherwise through the reader, with a timer that drops the socket
  if the peer never answers. Called from any greenlet, it never blocks for long.
"""

from __future__ import annotations

import contextlib
import logging
import socket as stdlib_socket
from typing import NoReturn

import gevent
from gevent import socket
from gevent.lock import Semaphore
from wsproto.connection import Connection as WSConnection
from wsproto.connection import ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, TextMessage

from ..errors import MQTTError, PacketTooLarge, ProtocolError, ReasonCode
from .transport import RECV_SIZE, adopt_socket, recv_within, send_all, write_nonblocking
from .ws_frames import FrameReader, binary_frame

log = logging.getLogger("greenfly.websocket")

CLOSE_TIMEOUT = 1.0  # seconds to wait for the peer's close frame (or to send ours)

# WebSocket close codes (RFC 6455 7.4.1) for the MQTT reason a connection ends with.
NORMAL, GOING_AWAY, PROTOCOL, UNSUPPORTED_DATA, TOO_BIG, INTERNAL = (
    1000, 1001, 1002, 1003, 1009, 1011)
CLOSE_CODES: dict[int, int] = {
    ReasonCode.SUCCESS: NORMAL,
    ReasonCode.SERVER_SHUTTING_DOWN: GOING_AWAY,
    ReasonCode.MALFORMED_PACKET: PROTOCOL,
    ReasonCode.PROTOCOL_ERROR: PROTOCOL,
    ReasonCode.TOPIC_NAME_INVALID: PROTOCOL,
    ReasonCode.TOPIC_FILTER_INVALID: PROTOCOL,
    ReasonCode.TOPIC_ALIAS_INVALID: PROTOCOL,
    ReasonCode.RECEIVE_MAXIMUM_EXCEEDED: PROTOCOL,
    ReasonCode.PACKET_TOO_LARGE: TOO_BIG,
    ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR: INTERNAL,
}


def close_code(reason_code: int) -> int:
    """The close code for an MQTT reason: 1000 unless the reason is one of the errors above."""
    return CLOSE_CODES.get(reason_code, NORMAL)


def drop(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # not connected any more: nothing to shut down
        sock.shutdown(stdlib_socket.SHUT_RDWR)
    sock.close()


class WebSocketTransport:
    """The `Transport` for one upgraded socket: MQTT bytes in and out of binary frames."""

    __slots__ = ("_abort", "_closing", "_done", "_fd", "_incoming", "_lock", "_partial",
                 "_pending", "_reader", "_sock", "_tail", "_ws", "address")

    def __init__(self, sock: socket.socket, address: str, max_message_size: int,
                 trailing: bytes = b"") -> None:
        self._sock = sock
        self.address = address
        self._ws = WSConnection(ConnectionType.SERVER)
        self._incoming = FrameReader(max_message_size)
        self._lock = Semaphore(1)
        self._reader = gevent.getcurrent()  # the listener's greenlet, which runs the Connection
        self._pending = trailing or None  # bytes that came with the handshake
        self._partial = False
        self._tail = b""  # the end of a frame a try_send could not write whole
        self._fd = adopt_socket(sock)  # -1 for TLS: then always sendall
        self._closing = False  # our close frame is out (or could not be sent)
        self._done = False  # the close handshake is over, or the stream ended
        self._abort: gevent.Greenlet | None = None

    # -- reading -------------------------------------------------------------------------------

    def recv(self, idle: gevent.Timeout | None = None) -> bytes:
        self._reader = gevent.getcurrent()  # a parked connection resumes in a new greenlet
        while not self._done:
            if self._pending is not None:
                data, self._pending = self._pending, None
            else:
                data = recv_within(self._sock, idle)
            if not data:
                self._done = True
                break
            out = self._frames(data)
            if out and not self._closing:
                return out
        if self._closing:
            self._finish()  # our close was answered; nobody else will touch the socket
        return b""

    def _frames(self, data: bytes) -> bytes:
        """The MQTT bytes in every complete frame buffered; an incomplete one waits.

        Plain frames come unmasked from the `FrameReader`; every other frame goes whole to
        wsproto, in its place in the byte order.
        """
        incoming = self._incoming
        try:
            plain, other = incoming.receive(data)
        except PacketTooLarge as exc:
            self._fail(TOO_BIG, exc)
        if other is None:
            return plain  # plain frames only: what clients send
        out = [plain] if plain else []
        while other is not None:
            self._slow_frame(other, out)
            if self._done or self._closing:
                # After the peer's close frame nothing more is read, but what came before
                # it (a DISCONNECT, typically) still counts. After ours, nothing does.
                incoming.clear()
                return b"" if self._closing else b"".join(out)
            try:
                plain, other = incoming.receive(b"")
            except PacketTooLarge as exc:
                self._fail(TOO_BIG, exc)
            if plain:
                out.append(plain)
        return b"".join(out)

    def _slow_frame(self, frame: bytes, out: list[bytes]) -> None:
        ws = self._ws
        ws.receive_data(frame)
        for event in ws.events():
            if isinstance(event, BytesMessage):
                out.append(event.data)
            else:
                self._control(event)

    def _control(self, event: Event) -> None:
        if isinstance(event, Ping):
            if not self._closing:
                self._write(self._ws.send(event.response()))
        elif isinstance(event, TextMessage):
            self._fail(UNSUPPORTED_DATA, ProtocolError(
                "WebSocket text frame: MQTT travels in binary frames only [MQTT-6.0.0-1]"))
        elif isinstance(event, CloseConnection):
            state = self._ws.state
            if state is ConnectionState.REMOTE_CLOSING:
                log.debug("%s sent WebSocket close %s %s", self.address, event.code,
                          event.reason)
                with contextlib.suppress(OSError):  # the peer may leave without our answer
                    self._write(self._ws.send(event.response()))
                self._done = True
            elif state is ConnectionState.CLOSED:
                self._done = True  # the answer to our own close frame
            else:  # wsproto reports a framing error as a close event in the OPEN state
                self._fail(event.code, ProtocolError(f"WebSocket: {event.reason}"))
        # Pong: nothing to do; we send no pings of our own (MQTT has PINGREQ for liveness)

    def _fail(self, code: int, exc: MQTTError) -> NoReturn:
        """Start the close handshake with `code` and end the reader with `exc`."""
        self._send_close(code)
        raise exc

    # -- writing -------------------------------------------------------------------------------

    def sendall(self, data: bytes) -> None:
        with self._lock:
            if self._closing or self._done:
                return  # no data frame may follow a close frame; the connection is ending
            self._finish_tail()
            if data:
                self._partial = True
                send_all(self._sock, binary_frame(data))
                self._partial = False

    def try_send(self, data: bytes) -> bool:
        """One binary frame written without blocking; the part the socket does not take is
        kept and finished first by the next write (until then `_partial` holds back any
        control frame, which must not land inside it)."""
        if (self._fd < 0 or self._partial or self._closing or self._done
                or self._lock.locked()):
            return False
        frame = binary_frame(data)
        written = write_nonblocking(self._fd, frame)
        if written < len(frame):
            self._tail = frame[written:]
            self._partial = True
        return True

    @property
    def unsent(self) -> bool:
        return bool(self._tail)

    @property
    def unbuffered(self) -> bool:
        return False  # a frame can arrive with the next one's start, kept by the reader

    def fileno(self) -> int:
        return self._sock.fileno()

    def _finish_tail(self) -> None:
        """With the lock held: the rest of a frame a try_send could not write whole."""
        tail = self._tail
        if tail:
            self._tail = b""
            send_all(self._sock, tail)
            self._partial = False

    def _write(self, frame: bytes) -> None:
        with self._lock:
            self._finish_tail()
            if self._partial:
                raise ConnectionAbortedError("a data frame was cut short")
            self._sock.sendall(frame)

    def _send_close(self, code: int) -> None:
        """Our close frame, once, if it can go out cleanly within CLOSE_TIMEOUT."""
        if self._closing:
            return
        self._closing = True
        if self._ws.state is not ConnectionState.OPEN:
            return
        frame = self._ws.send(CloseConnection(code))
        with gevent.Timeout(CLOSE_TIMEOUT, False):
            if self._lock.acquire():
                try:
                    if not self._partial:
                        self._sock.sendall(frame)
                        return
                except OSError:
                    pass
                finally:
                    self._lock.release()
        self._done = True  # the frame could not go out: there is no handshake to wait for

    # -- closing -------------------------------------------------------------------------------

    def linger_close(self, reason_code: int = 0) -> None:
        """The close handshake already lets the client finish: a plain close."""
        self.close(reason_code)

    def close(self, reason_code: int = 0) -> None:
        if not self._done:
            self._send_close(close_code(reason_code))
        if self._done:
            self._finish()
        elif gevent.getcurrent() is self._reader:
            self._linger()
            self._finish()
        elif self._abort is None:
            # The reader is blocked in recv(): it sees the peer's answer and finishes; if the
            # peer never answers, this drops the socket, which wakes the reader.
            self._abort = gevent.spawn_later(CLOSE_TIMEOUT, self._finish)

    def _linger(self) -> None:
        """In the reader: read until the peer's close frame, the end of the stream, or timeout."""
        with gevent.Timeout(CLOSE_TIMEOUT, False):
            try:
                while not self._done:
                    data = self._sock.recv(RECV_SIZE)
                    if not data:
                        return
                    self._frames(data)  # data is dropped now; only the close frame matters
            except (OSError, MQTTError):
                # A reset, or the socket closed under us (OSError, SSLError included); a
                # framing error, a text or oversized frame (MQTTError): no answer will come.
                return

    def _finish(self) -> None:
        self._done = True
        abort, self._abort = self._abort, None
        if abort is not None and abort is not gevent.getcurrent():
            abort.kill(block=False)
        drop(self._sock)

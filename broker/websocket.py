"""MQTT over WebSocket: the opening handshake and a transport that carries MQTT in binary frames.

Rules:
- The handshake runs in the listener's greenlet before any `Connection` exists, bounded by
  `connect_timeout`. The request is parsed by h11 (bounded to `HANDSHAKE_LIMIT` bytes); a
  path not configured gets 404 before anything else is looked at, a request that is not a
  WebSocket upgrade gets 400 with a one-line body naming greenfly, a malformed or oversized
  request gets 400, a wrong `Sec-WebSocket-Version` gets 426; each then closes the socket.
- Subprotocol: the answer is the first of `SUBPROTOCOLS` the client offered, spelled as the
  client spelled it (a client offering only `mqttv3.1` gets `mqttv3.1`); a client offering
  neither is still served, with no `Sec-WebSocket-Protocol` header. No extension is ever
  negotiated, so frames are plain.
- Behind a trusted proxy (`trusted_proxies`) the address in logs is the first
  `X-Forwarded-For` entry, else `X-Real-IP`, when it parses as an IP address.
- After the handshake, wsproto parses every frame: one `recv()` reads a big chunk, runs
  wsproto's event loop over it and returns the MQTT bytes of all binary frames in it, so one
  packet may span frames and one frame may hold many packets. Pings are answered from the
  reader; a text frame is closed with 1003 [MQTT-6.0.0-1]; a message larger than
  `max_packet_size` with 1009; a framing error with wsproto's code (1002/1007).
- `sendall(data)` sends one binary frame per call (the writer batches, so one frame per
  drained batch). Server frames are unmasked and carry no extension, so the data-frame
  header is laid out here rather than copying the payload through wsproto twice.
- Every socket write holds `_lock`, so a pong or close frame never lands inside a data frame.
  A write cut short (a killed writer) leaves `_partial` set: no frame may follow it, so the
  close then skips the close frame and just drops the socket.
- `close(reason_code)` sends a close frame whose code comes from the MQTT reason
  (`close_code`), then waits up to `CLOSE_TIMEOUT` for the peer's close frame: inline when
  called from the reader, otherwise through the reader, with a timer that drops the socket
  if the peer never answers. Called from any greenlet, it never blocks for long.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import logging
import socket as stdlib_socket
import struct
from collections.abc import Iterable

import gevent
import h11
from gevent import socket
from gevent.lock import Semaphore
from wsproto.connection import Connection as WSConnection
from wsproto.connection import ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, TextMessage
from wsproto.utilities import generate_accept_token

from .errors import MQTTError, PacketTooLarge, ProtocolError, ReasonCode
from .transport import RECV_SIZE, format_address

log = logging.getLogger("greenfly.websocket")

SUBPROTOCOLS = ("mqtt", "mqttv3.1")  # in order of preference
HANDSHAKE_LIMIT = 16 * 1024  # bytes of request line and headers before the request is refused
CLOSE_TIMEOUT = 1.0  # seconds to wait for the peer's close frame (or to send ours)
REJECT_LINGER = 1.0  # seconds to let a refused client read the answer before the socket goes

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

NOT_WEBSOCKET_BODY = ("greenfly MQTT broker: this URL speaks MQTT over WebSocket; "
                      "connect with an MQTT client (Upgrade: websocket)\n")


def close_code(reason_code: int) -> int:
    """The close code for an MQTT reason: 1000 unless the reason is one of the errors above."""
    return CLOSE_CODES.get(reason_code, NORMAL)


def choose_subprotocol(offered: Iterable[str]) -> str | None:
    """The first of `SUBPROTOCOLS` among `offered`, as the client spelled it; None if none."""
    by_name = {}
    for name in offered:
        by_name.setdefault(name.lower(), name)
    for name in SUBPROTOCOLS:
        if name in by_name:
            return by_name[name]
    return None


def _tokens(values: list[bytes]) -> list[str]:
    return [token.strip().decode("latin-1") for value in values
            for token in value.split(b",") if token.strip()]


class WebSocketEndpoint:
    """The handshake side of one `protocol = "websockets"` listener: its paths and proxies."""

    def __init__(self, paths: Iterable[str], trusted_proxies: Iterable[str]) -> None:
        self.paths = frozenset(paths)
        self.trusted = tuple(ipaddress.ip_network(p, strict=False) for p in trusted_proxies)

    def accept(self, sock: socket.socket, address: object, timeout: float,
               max_message_size: int) -> WebSocketTransport | None:
        """Run the opening handshake; the transport, or None when the socket was refused."""
        peer = format_address(address)
        timer = gevent.Timeout(timeout)
        timer.start()
        try:
            return self._handshake(sock, address, peer, max_message_size)
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            log.info("closing %s: WebSocket handshake not completed within %gs", peer, timeout)
        except OSError as exc:
            log.debug("WebSocket handshake from %s failed: %s", peer, exc)
        finally:
            timer.close()
        _drop(sock)
        return None

    def _handshake(self, sock: socket.socket, address: object, peer: str,
                   max_message_size: int) -> WebSocketTransport | None:
        http = h11.Connection(h11.SERVER, max_incomplete_event_size=HANDSHAKE_LIMIT)
        received = 0
        while True:
            try:
                event = http.next_event()
            except h11.RemoteProtocolError as exc:
                return self._refuse(sock, peer, 400, "Bad Request",
                                    f"malformed or oversized handshake: {exc}")
            if event is h11.NEED_DATA:
                data = sock.recv(RECV_SIZE)
                received += len(data)
                http.receive_data(data)
                if not data:
                    log.debug("%s closed the socket during the WebSocket handshake", peer)
                    _drop(sock)
                    return None
                continue
            if isinstance(event, h11.Request):
                break  # (h11 bounds a request still incomplete; a whole one is checked below)
            _drop(sock)  # h11 saw the stream end or something that is not a request
            return None
        trailing = http.trailing_data[0]
        if received - len(trailing) > HANDSHAKE_LIMIT:
            return self._refuse(sock, peer, 400, "Bad Request",
                                f"handshake over {HANDSHAKE_LIMIT} bytes")
        headers: dict[bytes, list[bytes]] = {}
        for name, value in event.headers:
            headers.setdefault(name, []).append(value)
        target = event.target.decode("latin-1")
        path = target.split("?", 1)[0]
        if path not in self.paths:
            return self._refuse(sock, peer, 404, "Not Found", f"no endpoint at {path!r}",
                                "greenfly: no MQTT WebSocket endpoint at this path\n")
        upgrade = [t.lower() for t in _tokens(headers.get(b"upgrade", []))]
        connection = [t.lower() for t in _tokens(headers.get(b"connection", []))]
        if event.method != b"GET" or "websocket" not in upgrade or "upgrade" not in connection:
            return self._refuse(sock, peer, 400, "Bad Request",
                                f"{event.method.decode('latin-1')} {path} without a WebSocket "
                                "upgrade", NOT_WEBSOCKET_BODY)
        version = headers.get(b"sec-websocket-version", [b""])[0]
        if version != b"13":
            status, reason = (426, "Upgrade Required") if version else (400, "Bad Request")
            return self._refuse(sock, peer, status, reason,
                                f"unsupported Sec-WebSocket-Version {version!r}",
                                extra=b"Sec-WebSocket-Version: 13\r\n")
        key = headers.get(b"sec-websocket-key", [b""])[0]
        try:
            valid_key = len(base64.b64decode(key, validate=True)) == 16
        except ValueError:
            valid_key = False
        if not valid_key:
            return self._refuse(sock, peer, 400, "Bad Request",
                                f"bad Sec-WebSocket-Key {key!r}")
        offered = _tokens(headers.get(b"sec-websocket-protocol", []))
        subprotocol = choose_subprotocol(offered)
        response = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                    + generate_accept_token(key) + b"\r\n")
        if subprotocol is not None:
            response += b"Sec-WebSocket-Protocol: " + subprotocol.encode("latin-1") + b"\r\n"
        sock.sendall(response + b"\r\n")
        client = self._client_address(address, peer, headers)
        if subprotocol is None:
            log.debug("WebSocket from %s offered no MQTT subprotocol (offered %s); serving it "
                      "anyway", client, offered or "none")
        else:
            log.debug("WebSocket from %s at %s: subprotocol %s", client, path, subprotocol)
        return WebSocketTransport(sock, client, max_message_size, trailing)

    def _refuse(self, sock: socket.socket, peer: str, status: int, reason: str, why: str,
                body: str = "", extra: bytes = b"") -> None:
        log.info("refused WebSocket handshake from %s: HTTP %d: %s", peer, status, why)
        body_bytes = (body or f"greenfly: {status} {reason}\n").encode()
        head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                f"Content-Length: {len(body_bytes)}\r\nConnection: close\r\n").encode()
        sock.sendall(head + extra + b"\r\n" + body_bytes)
        try:
            # Half-close and read what the client still sends, so that unread request bytes
            # do not turn the close into a reset that could destroy the answer in flight.
            sock.shutdown(stdlib_socket.SHUT_WR)
            with gevent.Timeout(REJECT_LINGER, False):
                while sock.recv(RECV_SIZE):
                    pass
        except OSError:
            pass  # the client is gone already: nothing left to protect
        _drop(sock)

    def _client_address(self, address: object, peer: str, headers: dict[bytes, list[bytes]]
                        ) -> str:
        """The proxy's client (X-Forwarded-For, X-Real-IP) for a trusted peer, else the peer."""
        if not self.trusted or not isinstance(address, tuple):
            return peer
        try:
            ip = ipaddress.ip_address(str(address[0]).split("%", 1)[0])
        except ValueError:
            return peer
        if getattr(ip, "ipv4_mapped", None) is not None:
            ip = ip.ipv4_mapped
        if not any(ip in net for net in self.trusted):
            return peer
        forwarded = headers.get(b"x-forwarded-for") or headers.get(b"x-real-ip")
        if not forwarded:
            return peer
        first = forwarded[0].split(b",", 1)[0].strip().decode("latin-1")
        try:
            return str(ipaddress.ip_address(first))
        except ValueError:
            log.debug("ignoring forwarded address %r from proxy %s", first, peer)
            return peer


def _drop(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # not connected any more: nothing to shut down
        sock.shutdown(stdlib_socket.SHUT_RDWR)
    sock.close()


class WebSocketTransport:
    """The `Transport` for one upgraded socket: MQTT bytes in and out of binary frames."""

    __slots__ = ("_abort", "_closing", "_done", "_lock", "_max_message", "_message_size",
                 "_partial", "_pending", "_reader", "_ws", "address", "sock")

    def __init__(self, sock: socket.socket, address: str, max_message_size: int,
                 trailing: bytes = b"") -> None:
        self.sock = sock
        self.address = address
        self._ws = WSConnection(ConnectionType.SERVER, trailing_data=trailing)
        self._lock = Semaphore(1)
        self._reader = gevent.getcurrent()  # the listener's greenlet, which runs the Connection
        self._max_message = max_message_size
        self._message_size = 0
        self._pending = bool(trailing)  # bytes that came with the handshake await parsing
        self._partial = False
        self._closing = False  # our close frame is out (or could not be sent)
        self._done = False  # the close handshake is over, or the stream ended
        self._abort: gevent.Greenlet | None = None
        with contextlib.suppress(OSError):  # not a TCP socket: nothing to tune
            sock.setsockopt(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_NODELAY, 1)

    # -- reading -------------------------------------------------------------------------------

    def recv(self) -> bytes:
        ws = self._ws
        while not self._done:
            if self._pending:
                self._pending = False
            else:
                data = self.sock.recv(RECV_SIZE)
                if not data:
                    self._done = True
                    break
                ws.receive_data(data)
            chunks = []
            for event in ws.events():
                if type(event) is BytesMessage:
                    size = self._message_size + len(event.data)
                    if size > self._max_message:
                        self._fail(TOO_BIG, PacketTooLarge(
                            f"WebSocket message over max_packet_size ({self._max_message})"))
                    self._message_size = 0 if event.message_finished else size
                    chunks.append(event.data)
                else:
                    self._control(event)
            if chunks and not self._closing:
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if self._closing:
            self._finish()  # our close was answered; nobody else will touch the socket
        return b""

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

    def _fail(self, code: int, exc: MQTTError) -> None:
        """Start the close handshake with `code` and end the reader with `exc`."""
        self._send_close(code)
        raise exc

    # -- writing -------------------------------------------------------------------------------

    def sendall(self, data: bytes) -> None:
        n = len(data)
        if n < 126:
            header = bytes((0x82, n))
        elif n < 65_536:
            header = struct.pack("!BBH", 0x82, 126, n)
        else:
            header = struct.pack("!BBQ", 0x82, 127, n)
        with self._lock:
            if self._closing or self._done:
                raise ConnectionAbortedError("WebSocket is closing")
            self._partial = True
            self.sock.sendall(header + data)
            self._partial = False

    def _write(self, frame: bytes) -> None:
        with self._lock:
            if self._partial:
                raise ConnectionAbortedError("a data frame was cut short")
            self.sock.sendall(frame)

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
                        self.sock.sendall(frame)
                        return
                except OSError:
                    pass
                finally:
                    self._lock.release()
        self._done = True  # the frame could not go out: there is no handshake to wait for

    # -- closing -------------------------------------------------------------------------------

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
        ws = self._ws
        with gevent.Timeout(CLOSE_TIMEOUT, False):
            try:
                while ws.state is not ConnectionState.CLOSED:
                    data = self.sock.recv(RECV_SIZE)
                    if not data:
                        return
                    ws.receive_data(data)
                    for _event in ws.events():
                        pass  # only the close frame matters now
            except Exception:  # a reset, a framing error: either way there is no answer
                return

    def _finish(self) -> None:
        self._done = True
        abort, self._abort = self._abort, None
        if abort is not None and abort is not gevent.getcurrent():
            abort.kill(block=False)
        _drop(self.sock)

"""The WebSocket opening handshake: from an accepted socket to a `WebSocketTransport`.

Rules:
- It runs in the listener's greenlet before any `Connection` exists, bounded by
  `connect_timeout`. h11 parses the request, bounded to `HANDSHAKE_LIMIT` bytes. A path not
  configured gets 404 before anything else is looked at; a request that is not a WebSocket
  upgrade gets 400 with a one-line body naming greenfly; a malformed or oversized request
  gets 400; a wrong `Sec-WebSocket-Version` gets 426. Each refusal then closes the socket.
- Subprotocol: the answer is the first of `SUBPROTOCOLS` the client offered, spelled as the
  client spelled it (a client offering only `mqttv3.1` gets `mqttv3.1`); a client offering
  neither is still served, with no `Sec-WebSocket-Protocol` header (logged at debug). No
  extension is ever negotiated, so frames stay plain.
- Behind a trusted proxy (`trusted_proxies`) the client is the right-most `X-Forwarded-For`
  entry that is not itself a trusted proxy (real_address.py: the entries left of it are the
  client's own words), else `X-Real-IP`; that address is what logs, the login slow-down and
  the anonymous rule see.
- Bytes the client sent right behind the request are handed to the transport, not lost.
"""

from __future__ import annotations

import base64
import logging
import socket as stdlib_socket
from collections.abc import Iterable

import gevent
import h11
from gevent import socket
from wsproto.utilities import generate_accept_token

from .real_address import TrustedProxies, parse_ip
from .transport import RECV_SIZE, format_address
from .websocket import WebSocketTransport, drop

log = logging.getLogger("greenfly.websocket")

SUBPROTOCOLS = ("mqtt", "mqttv3.1")  # in order of preference
HANDSHAKE_LIMIT = 16 * 1024  # bytes of request line and headers before the request is refused
REJECT_LINGER = 1.0  # seconds to let a refused client read the answer before the socket goes

NOT_WEBSOCKET_BODY = ("greenfly MQTT broker: this URL speaks MQTT over WebSocket; "
                      "connect with an MQTT client (Upgrade: websocket)\n")


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
        self.trusted = TrustedProxies(trusted_proxies)

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
        drop(sock)
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
                    drop(sock)
                    return None
                continue
            if isinstance(event, h11.Request):
                break  # (h11 bounds a request still incomplete; a whole one is checked below)
            drop(sock)  # h11 saw the stream end or something that is not a request
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
        drop(sock)

    def _client_address(self, address: object, peer: str, headers: dict[bytes, list[bytes]]
                        ) -> str:
        """The proxy's client (X-Forwarded-For, X-Real-IP) for a trusted peer, else the peer."""
        if not self.trusted or not isinstance(address, tuple):
            return peer
        if not self.trusted.trusts(parse_ip(str(address[0]))):
            return peer
        forwarded = headers.get(b"x-forwarded-for")
        if forwarded:
            client, why = self.trusted.forwarded_client(forwarded)
            if why:
                log.debug("X-Forwarded-For from proxy %s: %s", peer, why)
            return client or peer
        real_ip = headers.get(b"x-real-ip", [b""])[0].decode("latin-1")
        ip = parse_ip(real_ip) if real_ip else None
        if real_ip and ip is None:
            log.debug("ignoring X-Real-IP %r from proxy %s", real_ip, peer)
        return str(ip) if ip else peer

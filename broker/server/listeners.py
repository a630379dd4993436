"""Listeners: one `gevent.server.StreamServer` per configured `[[listener]]`.

Each accepted socket gets a greenlet (the server spawns it) that wraps the socket in its
transport and runs a `Connection` until it ends. A `protocol = "websockets"` listener first
runs the WebSocket opening handshake in that greenlet, bounded by `connect_timeout`; a socket
refused there never becomes a `Connection`. The listener keeps no per-connection state of its
own; the broker's connection set does, for the watchdog and for shutdown. What only some
listeners need (wsproto and h11 for WebSockets, ssl for TLS, the PROXY header parser) is
imported by the first listener that has it: a plain MQTT broker starts without them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import gevent
from gevent import socket
from gevent.server import StreamServer

from ..config.schema import Config, ListenerSection
from ..net.tls import build_ssl_context, certificate_identity
from ..net.transport import TcpTransport, Transport, format_address
from .security import ListenerSecurity

if TYPE_CHECKING:
    import ssl

    from gevent.ssl import SSLSocket

    from ..net.proxy_accept import ProxyProtocolEndpoint
    from ..net.ws_handshake import WebSocketEndpoint

log = logging.getLogger("greenfly.listener")

BACKLOG = 1024

class _Server(StreamServer):
    """A StreamServer that does not close the socket when the accepting greenlet returns:
    a connection that parks its reader outlives that greenlet and closes the socket itself;
    `Listener._handle` closes every socket no connection took."""

    def do_close(self, sock: socket.socket, *args: object) -> None:
        return None


# serve(transport, listener, TLS client identity): starts the connection; it runs in this
# greenlet until it ends or parks, and its close calls `listener.connection_closed()`.
TransportHandler = Callable[[Transport, "Listener", "str | None"], None]


class Listener:
    """Accepts connections for one `[[listener]]` and hands each, as a transport, to `serve`.

    `settings` returns the broker's current configuration (it changes on reload); the TLS and
    WebSocket handshakes read `connect_timeout` and `max_packet_size` from it. `security`
    (passwords, ACL) and `ssl_context` are replaced as a whole on reload: connections read
    them when they need them, so new connections and new subscriptions get the new rules and
    nobody is dropped. `max_connections` refuses sockets beyond the limit at once.
    """

    def __init__(self, config: ListenerSection, serve: TransportHandler,
                 settings: Callable[[], Config], security: ListenerSecurity) -> None:
        self.config = config
        self.security = security
        self.ssl_context = build_ssl_context(config)
        self.active = 0
        self.accepted = 0  # sockets accepted since start (/metrics: greenfly_connections_total)
        self._serve = serve
        self._settings = settings
        self._websocket: WebSocketEndpoint | None = None
        if config.protocol == "websockets":
            from ..net.ws_handshake import WebSocketEndpoint

            self._websocket = WebSocketEndpoint(config.path, config.trusted_proxies)
        self._proxied: ProxyProtocolEndpoint | None = None
        if config.proxy_protocol:
            from ..net.proxy_accept import ProxyProtocolEndpoint

            self._proxied = ProxyProtocolEndpoint(config.trusted_proxies, self.describe)
        self._server = _Server((config.bind, config.port), self._handle, backlog=BACKLOG)

    @property
    def port(self) -> int:
        return self._server.server_port

    @property
    def scheme(self) -> str:
        return ("wss" if self.ssl_context else "ws") if self._websocket else \
            ("mqtts" if self.ssl_context else "mqtt")

    @property
    def url(self) -> str:
        """scheme://bind:port: how /metrics and the admin API name this listener."""
        return f"{self.scheme}://{self.config.bind}:{self.port}"

    @property
    def listening(self) -> bool:
        return self._server.started and not self._server.closed

    def describe(self) -> str:
        where = f"{self.config.bind}:{self.port}"
        scheme = self.scheme
        if self._websocket is not None:
            return f"{scheme} on {where} at {', '.join(self.config.path)}"
        if self.config.proxy_protocol:
            return f"{scheme} on {where} (PROXY protocol)"
        return f"{scheme} on {where}"

    def start(self) -> None:
        self._server.start()
        log.info("listening: %s; anonymous clients %s (%s)", self.describe(),
                 self.security.anonymous_words, self.security.anonymous_why)

    def stop(self) -> None:
        self._server.close()

    def reconfigure(self, security: ListenerSecurity, ssl_context: ssl.SSLContext | None) -> None:
        self.security = security
        if self.ssl_context is not None:
            self.ssl_context = ssl_context

    def _handle(self, sock: socket.socket, address: object) -> None:
        self.accepted += 1
        limit = self.config.max_connections
        if limit and self.active >= limit:
            log.warning("refusing %s on %s: max_connections (%d) reached",
                        format_address(address), self.describe(), limit)
            sock.close()
            return
        # The listener alone counts its connections: one place taken here, given back once,
        # below if no connection took the socket, else by `connection_closed` when it closes.
        self.active += 1
        handed_over = False
        try:
            accepted = self._handshakes(sock, address)
            if accepted is not None:
                # The connection owns the socket from here, however it ends (it may outlive
                # this greenlet when it parks): its close gives the place back.
                handed_over = True
                self._serve(accepted[0], self, accepted[1])
        finally:
            if not handed_over:
                self.active -= 1
                sock.close()

    def connection_closed(self) -> None:
        self.active -= 1

    def _handshakes(self, sock: socket.socket,
                    address: object) -> tuple[Transport, str | None] | None:
        """TLS and WebSocket handshakes: the transport and the TLS client identity, or None
        (and a log line) if a handshake failed."""
        settings = self._settings()
        if self._proxied is not None:
            # Before TLS: the proxy writes its header ahead of everything, the handshake too.
            address = self._proxied.accept(sock, address, settings.broker.connect_timeout)
            if address is None:
                return None
        identity = None
        if self.ssl_context is not None:
            tls = self._tls_handshake(sock, address, settings.broker.connect_timeout)
            if tls is None:
                return None
            sock = tls
            identity = certificate_identity(sock.getpeercert())
        if self._websocket is None:
            transport: Transport | None = TcpTransport(sock, address)
        else:
            transport = self._websocket.accept(sock, address, settings.broker.connect_timeout,
                                               settings.limits.max_packet_size)
        if transport is None:
            return None
        return transport, identity

    def _tls_handshake(self, sock: socket.socket, address: object,
                       timeout: float) -> SSLSocket | None:
        """The TLS handshake, bounded by connect_timeout; None (and a log line) if it fails."""
        import ssl  # loaded already: this listener has an SSL context

        peer = format_address(address)
        tls = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        try:
            with gevent.Timeout(timeout):
                tls.do_handshake()
            return tls
        except gevent.Timeout:
            log.info("closing %s: TLS handshake not completed within %gs", peer, timeout)
        except (OSError, ssl.SSLError) as exc:
            log.info("closing %s: TLS handshake failed: %s", peer, exc)
        tls.close()
        return None

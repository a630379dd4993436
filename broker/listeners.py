"""Listeners: one `gevent.server.StreamServer` per configured `[[listener]]`.

Each accepted socket gets a greenlet (the server spawns it) that wraps the socket in its
transport and runs a `Connection` until it ends. A `protocol = "websockets"` listener first
runs the WebSocket opening handshake in that greenlet, bounded by `connect_timeout`; a socket
refused there never becomes a `Connection`. The listener keeps no per-connection state of its
own; the broker's connection set does, for the watchdog and for shutdown.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from gevent import socket
from gevent.server import StreamServer

from .config import Config, ListenerSection
from .transport import TcpTransport, Transport
from .ws_handshake import WebSocketEndpoint

log = logging.getLogger("greenfly.listener")

BACKLOG = 1024

TransportHandler = Callable[[Transport], None]


class Listener:
    """Accepts connections for one `[[listener]]` and hands each, as a transport, to `serve`.

    `settings` returns the broker's current configuration (it changes on reload); the
    WebSocket handshake reads `connect_timeout` and `max_packet_size` from it.
    """

    def __init__(self, config: ListenerSection, serve: TransportHandler,
                 settings: Callable[[], Config] = Config) -> None:
        self.config = config
        self._serve = serve
        self._settings = settings
        self._websocket: WebSocketEndpoint | None = None
        handle = self._handle
        if config.protocol == "websockets":
            self._websocket = WebSocketEndpoint(config.path, config.trusted_proxies)
            handle = self._handle_websocket
        self._server = StreamServer((config.bind, config.port), handle, backlog=BACKLOG)

    @property
    def port(self) -> int:
        return self._server.server_port

    def describe(self) -> str:
        where = f"{self.config.bind}:{self.port}"
        if self._websocket is not None:
            return f"websockets on {where} at {', '.join(self.config.path)}"
        return f"{self.config.protocol} on {where}"

    def start(self) -> None:
        self._server.start()
        log.info("listening: %s", self.describe())

    def stop(self) -> None:
        self._server.close()

    def _handle(self, sock: socket.socket, address: object) -> None:
        self._serve(TcpTransport(sock, address))

    def _handle_websocket(self, sock: socket.socket, address: object) -> None:
        assert self._websocket is not None
        settings = self._settings()
        transport = self._websocket.accept(sock, address, settings.broker.connect_timeout,
                                           settings.limits.max_packet_size)
        if transport is not None:
            self._serve(transport)

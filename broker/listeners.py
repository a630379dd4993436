"""Listeners: one `gevent.server.StreamServer` per configured `[[listener]]`.

Each accepted socket gets a greenlet (the server spawns it) that wraps the socket in its
transport and runs a `Connection` until it ends. The listener keeps no per-connection state
of its own; the broker's `ConnectionSet` does, for the watchdog and for shutdown.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from gevent import socket
from gevent.server import StreamServer

from .config import ListenerSection
from .transport import TcpTransport, Transport

log = logging.getLogger("greenfly.listener")

BACKLOG = 1024

TransportHandler = Callable[[Transport], None]


class Listener:
    """Accepts connections for one `[[listener]]` and hands each, as a transport, to `serve`."""

    def __init__(self, config: ListenerSection, serve: TransportHandler) -> None:
        self.config = config
        self._serve = serve
        self._server = StreamServer((config.bind, config.port), self._handle, backlog=BACKLOG)

    @property
    def port(self) -> int:
        return self._server.server_port

    def describe(self) -> str:
        return f"{self.config.protocol} on {self.config.bind}:{self.port}"

    def start(self) -> None:
        self._server.start()
        log.info("listening: %s", self.describe())

    def stop(self) -> None:
        self._server.close()

    def _handle(self, sock: socket.socket, address: object) -> None:
        self._serve(TcpTransport(sock, address))

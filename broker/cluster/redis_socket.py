"""redis-py connections whose sockets are gevent's, so that a Redis call blocks only the
greenlet that makes it, without `gevent.monkey.patch_all()` (which greenfly does not do).

redis-py opens its socket in `_connect` with the standard `socket` module, whose calls block
the whole hub (SCALE-OUT.md §14c measured 2 s frozen for one `BLPOP 2`). Everything after the
connect (sendall, recv_into, settimeout) works unchanged on a gevent socket, so only `_connect`
is replaced here. What must not be used on these connections: `can_read(timeout > 0)` (it
calls `select.poll` directly) and redis-py's `Retry` with a backoff (it calls `time.sleep`);
RedisLink does neither.
"""

from __future__ import annotations

import socket as std_socket
from typing import Any

from gevent import socket, ssl
from redis.connection import Connection, UnixDomainSocketConnection


class GeventConnection(Connection):
    """TCP: `gevent.socket`, TCP_NODELAY (pipelines of small commands), keepalive, and the
    connect timeout, then the read/write timeout, as redis-py's own `_connect` sets them."""

    loaded_scripts: set[str]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.loaded_scripts = set()

    def _connect(self) -> Any:
        sock = socket.create_connection((self.host, self.port),
                                        timeout=self.socket_connect_timeout)
        try:
            sock.setsockopt(std_socket.IPPROTO_TCP, std_socket.TCP_NODELAY, 1)
            sock.setsockopt(std_socket.SOL_SOCKET, std_socket.SO_KEEPALIVE, 1)
            sock.settimeout(self.socket_timeout)
            return self._secure(sock)
        except BaseException:
            sock.close()
            raise

    def _secure(self, sock: Any) -> Any:
        return sock


class GeventSSLConnection(GeventConnection):
    """rediss://: TLS through `gevent.ssl` with the default context: the server's certificate
    must chain to the system's CA store (or to SSL_CERT_FILE / SSL_CERT_DIR when set, as
    OpenSSL reads them) and name the host in the URL; TLS 1.2 or newer."""

    def _secure(self, sock: Any) -> Any:
        context = ssl.create_default_context()
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context.wrap_socket(sock, server_hostname=self.host)

    def _host_error(self) -> str:
        return f"{self.host}:{self.port} (TLS)"


class GeventUnixConnection(UnixDomainSocketConnection):
    """unix:///path: the same on a local socket (no TCP options to set)."""

    loaded_scripts: set[str]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.loaded_scripts = set()

    def _connect(self) -> Any:
        sock = socket.socket(std_socket.AF_UNIX, std_socket.SOCK_STREAM)
        try:
            sock.settimeout(self.socket_connect_timeout)
            sock.connect(self.path)
            sock.settimeout(self.socket_timeout)
            return sock
        except BaseException:
            sock.close()
            raise

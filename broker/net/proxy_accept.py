"""Reading PROXY protocol headers on accept, for `mqtt` listeners with `proxy_protocol = true`.

Rules:
- Only a peer in `trusted_proxies` may connect; anyone else is closed at once (logged), since
  a client straight to this port could otherwise write a header naming any address it likes,
  and a header-less client would be taken for garbage anyway.
- The first header must arrive within `HEADER_TIMEOUT` (the proxy writes it as it connects),
  and a missing or malformed one closes the socket with the reason in the log: the bytes of
  a stream that does not start as promised cannot be trusted for anything.
- The header's source is the client's address. When that address is itself a trusted proxy,
  the walk goes on as for X-Forwarded-For: another header may follow, written by the proxy
  before it (frpc relays nginx's header behind its own; an MQTT stream starts with CONNECT,
  0x10, which no header does, so there is no ambiguity). Up to `MAX_HEADERS`.
- Bytes are taken from the socket exactly up to the end of the headers (read with MSG_PEEK
  first), so the MQTT bytes behind them stay in the socket for the transport.
"""

from __future__ import annotations

import logging
import socket as stdlib_socket
from collections.abc import Callable

import gevent
from gevent import socket

from .proxy_header import ProxyHeader, ProxyHeaderError, could_start, parse
from .real_address import TrustedProxies, parse_ip
from .transport import RECV_SIZE, format_address

log = logging.getLogger("greenfly.listener")

HEADER_TIMEOUT = 5.0  # seconds a proxy has to send its header (bounded by connect_timeout)
MAX_HEADERS = 4  # proxies in a row, each naming the one before


class ProxyProtocolEndpoint:
    """The PROXY protocol side of one `proxy_protocol = true` listener."""

    def __init__(self, trusted_proxies: tuple[str, ...], describe: Callable[[], str]) -> None:
        self.trusted = TrustedProxies(trusted_proxies)
        self.describe = describe  # the listener, as its log lines name it

    def accept(self, sock: socket.socket, address: object, connect_timeout: float
               ) -> object | None:
        """The client's address as the proxies name it (the peer's own for LOCAL/UNKNOWN),
        or None when the socket is to be closed (the reason is logged)."""
        peer = format_address(address)
        if not isinstance(address, tuple) or not self.trusted.trusts(parse_ip(str(address[0]))):
            log.warning("closing %s: %s takes PROXY protocol connections from trusted_proxies "
                        "only", peer, self.describe())
            return None
        wait = min(HEADER_TIMEOUT, connect_timeout)
        timer = gevent.Timeout(wait)
        timer.start()
        late = f"no PROXY protocol header within {wait:g}s"
        client: object = address
        try:
            for _ in range(MAX_HEADERS):
                header = _read_header(sock)
                if header is None:
                    log.info("closing %s: closed before its PROXY protocol header ended", peer)
                    return None
                if header.source is None:
                    log.debug("PROXY v%d %s from %s: its own address stands", header.version,
                              header.why, peer)
                    break
                client = header.source
                if not self.trusted.trusts(parse_ip(header.source[0])):
                    break
                # A trusted proxy named another trusted proxy: its header may come next. The
                # client's CONNECT may take longer than a proxy's header: connect_timeout.
                timer.cancel()
                timer = gevent.Timeout(connect_timeout)
                timer.start()
                late = f"nothing after its PROXY protocol header within {connect_timeout:g}s"
                first = sock.recv(1, stdlib_socket.MSG_PEEK)
                if not first or not could_start(first):
                    break
            return client
        except ProxyHeaderError as exc:
            log.warning("closing %s: %s; %s", peer, exc, self._needs())
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            log.warning("closing %s: %s; %s", peer, late, self._needs())
        except OSError as exc:
            log.info("closing %s: %s while reading its PROXY protocol header", peer, exc)
        finally:
            timer.close()
        return None


    def _needs(self) -> str:
        return (f"{self.describe()} needs every connection to start with a PROXY protocol "
                "header (nginx: proxy_protocol on; frp: transport.proxyProtocolVersion)")


def _read_header(sock: socket.socket) -> ProxyHeader | None:
    """One header, taking exactly its bytes from the socket; None if the peer closed."""
    taken = b""
    while True:
        peeked = sock.recv(RECV_SIZE, stdlib_socket.MSG_PEEK)
        if not peeked:
            return None
        header = parse(taken + peeked)
        # Whatever parse has seen so far belongs to the header (it stops at its end): take
        # all of it when it asks for more, only the header's own bytes when it is whole.
        want = len(peeked) if header is None else header.length - len(taken)
        taken += _recv_exactly(sock, want)
        if header is not None:
            return header


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        data = sock.recv(n - len(out))
        if not data:
            raise OSError("peer closed the connection")
        out += data
    return out

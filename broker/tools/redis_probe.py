"""`greenfly check` with a `[cluster]` section: can Redis be reached, and is it durable the
way the cluster's acknowledgements assume? (A few RESP commands over a plain socket: the tools
load no gevent and no Redis client.)"""

from __future__ import annotations

import socket
import ssl
import sys
from typing import Any
from urllib.parse import unquote, urlparse

from ..config.loading import redis_password
from ..config.redis_durability import durability_warnings
from ..config.schema import Config

TIMEOUT = 3.0


def check_hook(config: Config, args: Any) -> int:
    """Warnings only: Redis may be down for a moment while its config is fine; the broker
    waits for it at start-up (and says so)."""
    section = config.cluster
    if section is None:
        return 0
    try:
        with _connect(section.redis_url) as sock:
            reader = sock.makefile("rb")
            password = redis_password(section)
            user = unquote(urlparse(section.redis_url).username or "")
            if password is not None:
                _call(sock, reader, "AUTH", *([user] if user else []), password)
            appendonly = _config_get(sock, reader, "appendonly")
            appendfsync = _config_get(sock, reader, "appendfsync")
    except (OSError, RedisReplyError) as exc:
        print(f"greenfly check: WARNING: [cluster] Redis at {section.redis_url} cannot be "
              f"asked: {exc}", file=sys.stderr)
        return 0
    for warning in durability_warnings(appendonly, appendfsync):
        print(f"greenfly check: WARNING: [cluster] {warning}", file=sys.stderr)
    if appendonly == "yes" and appendfsync == "always":
        print(f"  Redis at {section.redis_url}: appendonly yes, appendfsync always")
    return 0


class RedisReplyError(Exception):
    pass


def _connect(url: str) -> socket.socket:
    parsed = urlparse(url)
    if parsed.scheme == "unix":
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(TIMEOUT)
        sock.connect(parsed.path)
        return sock
    sock = socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379),
                                    TIMEOUT)
    if parsed.scheme == "rediss":
        return ssl.create_default_context().wrap_socket(sock, server_hostname=parsed.hostname)
    return sock


def _call(sock: socket.socket, reader: Any, *args: str) -> Any:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    sock.sendall(b"".join(out))
    return _read(reader)


def _read(reader: Any) -> Any:
    line = reader.readline()
    if not line:
        raise OSError("connection closed")
    kind, rest = line[:1], line[1:].rstrip(b"\r\n")
    if kind == b"-":
        raise RedisReplyError(rest.decode(errors="replace"))
    if kind in (b"+", b":"):
        return rest.decode()
    if kind == b"$":
        size = int(rest)
        return None if size < 0 else reader.read(size + 2)[:-2].decode(errors="replace")
    if kind == b"*":
        return [_read(reader) for _ in range(max(0, int(rest)))]
    raise RedisReplyError(f"unexpected reply {line!r}")


def _config_get(sock: socket.socket, reader: Any, name: str) -> str | None:
    try:
        reply = _call(sock, reader, "CONFIG", "GET", name)
    except RedisReplyError:
        return None  # CONFIG renamed or not allowed for this user
    return reply[1] if isinstance(reply, list) and len(reply) == 2 else None

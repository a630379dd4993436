"""The JSON admin API under `/api/v1/`: who is connected, what is kept, and three actions.

Reads: `clients` (and `clients/<id>`), `sessions` (offline ones), `subscriptions`, `retained`,
`bridges` (each `[[bridge]]`'s link, read off the running `Bridge`), each a page (`limit`, at
most `MAX_LIMIT`, and `offset`; `{"total", "offset", "limit", "items"}`) in a stable order
(client id, filter, topic, name), so a store of a million entries is never answered whole.
`overview` is the status page's numbers.

Actions (always with the bearer token, checked by the listener): `POST clients/<id>/disconnect`
(MQTT 5 clients get DISCONNECT 0x98 administrative action; the will is published, as for any
end the client did not ask for), `DELETE sessions/<id>` (an offline session: its
subscriptions and queued messages go; an online one is 409, disconnect it first) and
`DELETE retained/<topic>` (the retained message goes, as an empty retained PUBLISH would clear
it, but nothing is sent to subscribers).

Everything is read on the hub in one go, without yielding, so a page is one instant's view.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ..core.protocol import CloseReason
from ..core.session import Session
from ..errors import ReasonCode
from ..link.bridge import Bridge
from ..link.connection import Connection
from ..store.records import RetainedCleared
from .http_types import Handler, Request, Response
from .listeners import Listener
from .runtime_view import Runtime

PREFIX = "/api/v1/"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
KICKED = CloseReason("disconnected by an operator (admin API)", True,
                     ReasonCode.ADMINISTRATIVE_ACTION, notify=True)
LEVELS = {3: "3.1", 4: "3.1.1", 5: "5"}


class AdminApi:
    def __init__(self, runtime: Runtime, overview: Callable[[], dict[str, Any]]) -> None:
        self.runtime = runtime
        self.overview = overview

    def routes(self) -> dict[tuple[str, str], Handler]:
        return {
            ("GET", PREFIX + "overview"): lambda request: Response.json(200, self.overview()),
            ("GET", PREFIX + "clients"): self.clients,
            ("GET", PREFIX + "clients/"): self.client,
            ("POST", PREFIX + "clients/"): self.disconnect,
            ("GET", PREFIX + "sessions"): self.sessions,
            ("DELETE", PREFIX + "sessions/"): self.delete_session,
            ("GET", PREFIX + "subscriptions"): self.subscriptions,
            ("GET", PREFIX + "retained"): self.retained,
            ("DELETE", PREFIX + "retained/"): self.delete_retained,
            ("GET", PREFIX + "bridges"): self.bridges,
        }

    # -- reads ---------------------------------------------------------------------------------

    def clients(self, request: Request) -> Response:
        """Connected clients; `q` keeps those whose id, address or user contains it."""
        wanted = request.query.get("q", "").lower()
        found = []
        for session in self.runtime.ctx.registry:
            connection = session.peer
            if not isinstance(connection, Connection):
                continue
            proto = connection.protocol
            if wanted and not any(wanted in (text or "").lower() for text in
                                  (session.client_id, proto.address, proto.username)):
                continue
            found.append((session.client_id, session, connection))
        found.sort(key=lambda item: item[0])
        return _page(request, found, lambda item: client_json(item[1], item[2]))

    def client(self, request: Request) -> Response:
        client_id = request.path[len(PREFIX + "clients/"):]
        session = self.runtime.ctx.registry.get(client_id)
        if session is None or not isinstance(session.peer, Connection):
            return Response.json(404, {"error": f"no connected client {client_id!r}"})
        body = client_json(session, session.peer)
        body["subscriptions"] = [{"filter": topic_filter, "qos": options.qos}
                                 for topic_filter, options in sorted(session.subscriptions.items())]
        return Response.json(200, body)

    def sessions(self, request: Request) -> Response:
        """Sessions kept for clients that are not connected."""
        offline = sorted((s for s in self.runtime.ctx.registry if s.peer is None),
                         key=lambda s: s.client_id)
        return _page(request, offline, session_json)

    def subscriptions(self, request: Request) -> Response:
        rows = sorted((session.client_id, topic_filter, options.qos)
                      for session in self.runtime.ctx.registry
                      for topic_filter, options in session.subscriptions.items())
        return _page(request, rows, lambda row: {"client_id": row[0], "filter": row[1],
                                                 "qos": row[2]})

    def retained(self, request: Request) -> Response:
        """Retained topics; `prefix` keeps those that start with it."""
        prefix = request.query.get("prefix", "")
        messages = sorted((m for m in self.runtime.ctx.retained.all()
                           if m.topic.startswith(prefix)), key=lambda m: m.topic)
        return _page(request, messages, lambda m: {"topic": m.topic, "qos": m.qos,
                                                   "bytes": len(m.payload)})

    def bridges(self, request: Request) -> Response:
        """The `[[bridge]]`s by name: the remote address in use and the link's state."""
        return _page(request, list(self.runtime.bridges), bridge_json)

    # -- actions -------------------------------------------------------------------------------

    def disconnect(self, request: Request) -> Response:
        rest = request.path[len(PREFIX + "clients/"):]
        client_id, _, action = rest.rpartition("/")
        if action != "disconnect" or not client_id:
            return Response.json(404, {"error": "POST /api/v1/clients/<id>/disconnect"})
        session = self.runtime.ctx.registry.get(client_id)
        connection = session.peer if session is not None else None
        if not isinstance(connection, Connection):
            return Response.json(404, {"error": f"no connected client {client_id!r}"})
        connection.terminate(KICKED)
        return Response.json(200, {"disconnected": client_id})

    def delete_session(self, request: Request) -> Response:
        client_id = request.path[len(PREFIX + "sessions/"):]
        registry = self.runtime.ctx.registry
        session = registry.get(client_id)
        if session is None:
            return Response.json(404, {"error": f"no session {client_id!r}"})
        if session.peer is not None:
            return Response.json(409, {"error": f"{client_id!r} is connected: disconnect it "
                                                "first (POST clients/<id>/disconnect)"})
        registry.remove(session)
        return Response.json(200, {"deleted": client_id})

    def delete_retained(self, request: Request) -> Response:
        topic = request.path[len(PREFIX + "retained/"):]
        ctx = self.runtime.ctx
        if not ctx.retained.clear(topic):
            return Response.json(404, {"error": f"no retained message on {topic!r}"})
        ctx.store.append(RetainedCleared(topic))
        return Response.json(200, {"deleted": topic})


def client_json(session: Session, connection: Connection) -> dict[str, Any]:
    proto = connection.protocol
    listener = proto.source
    since = time.time() - (time.monotonic() - proto.connected_at)
    return {
        "client_id": session.client_id,
        "address": proto.address,
        "user": proto.username,
        "protocol": f"MQTT {LEVELS.get(proto.protocol_level, proto.protocol_level)}",
        "transport": listener.scheme if isinstance(listener, Listener) else None,
        "listener": listener.url if isinstance(listener, Listener) else None,
        "keepalive": proto.keepalive,
        "connected_since": _iso(since),
        "inflight": len(session.inflight),
        "queued": len(session.queue),
        "subscriptions": len(session.subscriptions),
        "persistent": session.persistent,
    }


def bridge_json(bridge: Bridge) -> dict[str, Any]:
    session = bridge.session
    return {
        "name": bridge.name,
        "address": bridge.connected_to,  # None while the link is down
        "state": bridge.state,
        "since": _iso(bridge.since),
        "connects": bridge.connects,
        "queued": len(session.queue) if session is not None else 0,
        "inflight": len(session.inflight) if session is not None else 0,
    }


def session_json(session: Session) -> dict[str, Any]:
    return {
        "client_id": session.client_id,
        "protocol": f"MQTT {LEVELS.get(session.protocol_level, session.protocol_level)}",
        "disconnected_at": _iso(session.disconnected_at) if session.disconnected_at else None,
        "expiry": session.expiry,
        "inflight": len(session.inflight),
        "queued": len(session.queue),
        "subscriptions": len(session.subscriptions),
    }


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _page(request: Request, rows: list[Any], render: Callable[[Any], Any]) -> Response:
    try:
        limit = int(request.query.get("limit", DEFAULT_LIMIT))
        offset = int(request.query.get("offset", 0))
    except ValueError:
        return Response.json(400, {"error": "limit and offset are integers"})
    if not 1 <= limit <= MAX_LIMIT or offset < 0:
        return Response.json(400, {"error": f"limit is 1..{MAX_LIMIT}, offset 0 or more"})
    items = [render(row) for row in rows[offset:offset + limit]]
    return Response.json(200, {"total": len(rows), "offset": offset, "limit": limit,
                               "items": items})

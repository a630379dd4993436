"""What one connection's protocol knows, apart from the packet handlers that change it.

`ProtocolState` holds a connection's MQTT state (ClientProtocol in protocol.py adds the
dispatch, connect_flow.py, publish_flow.py and subscribe_flow.py the handlers, each a function
of the state and one packet); `CloseReason` says why a connection ended; the auth step's types
(`AuthRequest`, `AuthResult`, `Authority`) are what the protocol asks of the connection when
a CONNECT needs its credentials checked. Nothing here waits or touches a socket.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..auth.acl import Rules
from ..codec import Connect, Will
from ..errors import MQTTError, ReasonCode
from .client_limits import DEFAULTS, ClientLimits
from .context import BrokerContext
from .session import Peer, Session, WaitDurable

log = logging.getLogger("greenfly.connection")

AWAIT_CONNECT, AWAIT_AUTH, CONNECTED, CLOSED = "await-connect", "await-auth", "connected", \
    "closed"


@dataclass(frozen=True, slots=True)
class CloseReason:
    """Why a connection ended: what the log says, and whether the will goes out."""

    text: str
    publish_will: bool = True
    reason_code: int = ReasonCode.UNSPECIFIED_ERROR
    # The broker ends it and an MQTT 5 client is told why with a DISCONNECT first (5.0
    # section 3.14: takeover 0x8E, keepalive 0x8D, shutdown 0x8B, ...).
    notify: bool = False

    @staticmethod
    def protocol_error(exc: MQTTError) -> CloseReason:
        kind = "malformed packet" if exc.reason_code == ReasonCode.MALFORMED_PACKET else \
            "protocol error"
        return CloseReason(f"{kind}: {exc.message}", True, exc.reason_code)

    @staticmethod
    def socket_error(detail: str) -> CloseReason:
        return CloseReason(f"socket error: {detail}")

    @property
    def kind(self) -> str:
        """A short name for the reason, for the disconnect counters (/metrics)."""
        for prefix, kind in _KINDS:
            if self.text.startswith(prefix):
                return kind
        return "other"


# CloseReason.text prefix -> kind; texts are written here and in link/connection.py.
_KINDS = (("client DISCONNECT", "client_disconnect"), ("socket closed by peer", "peer_closed"),
          ("keepalive timeout", "keepalive_timeout"), ("session taken over", "takeover"),
          ("server shutdown", "server_shutdown"), ("no CONNECT", "connect_timeout"),
          ("connection refused", "refused"), ("malformed packet", "malformed_packet"),
          ("protocol error", "protocol_error"), ("socket error", "socket_error"),
          ("store failure", "store_failure"), ("unexpected error", "internal_error"),
          ("disconnected by an operator", "administrative_action"))


CLIENT_DISCONNECT = CloseReason("client DISCONNECT", False, ReasonCode.SUCCESS)
PEER_CLOSED = CloseReason("socket closed by peer")
KEEPALIVE_TIMEOUT = CloseReason("keepalive timeout", True, ReasonCode.KEEP_ALIVE_TIMEOUT,
                                notify=True)
TAKEOVER = CloseReason("session taken over by a new connection", True,
                       ReasonCode.SESSION_TAKEN_OVER, notify=True)
SERVER_SHUTDOWN = CloseReason("server shutdown", True, ReasonCode.SERVER_SHUTTING_DOWN,
                              notify=True)
CONNECT_TIMEOUT = CloseReason("no CONNECT within connect_timeout", False)


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """What a CONNECT asks to be checked: its credentials, the client's host (the IP, for the
    failed-login delay) and the common name of its verified TLS client certificate."""

    username: str | None
    password: bytes | None = field(repr=False)  # never in a log line
    host: str
    identity: str | None = None


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The verdict on a CONNECT: the reason code, the user name it runs as, and why."""

    reason: ReasonCode
    username: str | None
    why: str = ""


class Authority(Protocol):
    """Who may connect and what they may touch (a listener's `ListenerSecurity`)."""

    def authenticate(self, request: AuthRequest,
                     still_wanted: Callable[[], bool] | None = None) -> AuthResult:
        """The verdict on a CONNECT. May block the calling greenlet (hashing, the delay after
        a failure), so the connection calls it, never the protocol; `still_wanted()` says
        whether the client is still there to be answered (no hash is spent on one gone)."""
        ...

    def rules(self, client_id: str, username: str | None) -> Rules | None:
        ...


class OpenAuthority:
    """Everyone may connect and touch everything (but `$SYS`): a connection built without a
    listener, as in unit tests, or a broker section with `allow_anonymous` and nothing else."""

    def authenticate(self, request: AuthRequest,
                     still_wanted: Callable[[], bool] | None = None) -> AuthResult:
        return AuthResult(ReasonCode.SUCCESS, request.username)

    def rules(self, client_id: str, username: str | None) -> Rules | None:
        return None


class SecuritySource(Protocol):
    """Where a connection finds the rules in force: its listener (replaced on reload)."""

    security: Authority


class _Open:
    security: Authority = OpenAuthority()


_OPEN = _Open()


class _Gone:
    """The peer of a protocol whose connection has closed: takes nothing, is always full.
    The connection hands it over as it closes, so no reference cycle between the two is left
    for the collector, and the connection's memory is freed as soon as nobody uses it."""

    protocol_level = 0

    def put(self, item: object) -> None:
        pass

    def offer(self, data: bytes) -> bool:
        return False

    def terminate(self, reason: object) -> None:
        pass

    def produce(self, feed: object) -> None:
        pass


GONE: Peer = _Gone()


class ProtocolState:
    __slots__ = ("ctx", "peer", "address", "source", "identity", "rules", "state",
                 "client_id", "protocol_level", "keepalive", "clean", "username", "will",
                 "session", "connected_at", "close_after_flush", "pending_connect",
                 "limits", "connack_waits_for", "bridge")

    def __init__(self, ctx: BrokerContext, peer: Peer, address: str,
                 source: SecuritySource | None = None,
                 identity: str | None = None) -> None:
        self.ctx = ctx
        self.peer = peer
        self.address = address
        self.source = source or _OPEN  # read at each use: a reload swaps its `security`
        self.identity = identity  # common name of a verified TLS client certificate
        self.rules: Rules | None = None  # ACL rules for this client, None: no ACL
        self.state = AWAIT_CONNECT
        self.client_id = ""
        self.protocol_level = 4
        self.keepalive = 0
        self.clean = True
        self.username: str | None = None
        self.will: Will | None = None
        self.session: Session | None = None  # set with CONNECTED, so never None in a handler
        self.connected_at = 0.0
        self.close_after_flush: CloseReason | None = None  # set when the protocol ends it
        self.pending_connect: Connect | None = None  # the CONNECT awaiting its verdict
        # What an MQTT 5 client and the broker told each other: the shared defaults until
        # an MQTT 5 CONNECT gives it its own
        self.limits: ClientLimits = DEFAULTS
        # The store record the CONNACK waits for (a new persistent session's, a deleted
        # one's), 0 for none: until it is durable the CONNACK has not gone out.
        self.connack_waits_for = 0
        self.bridge = False  # the CONNECT had Mosquitto's bridge bit (Connect.bridge)

    def describe(self) -> str:
        who = self.client_id or "(no client id yet)"
        return f"{who} from {self.address}"

    def wait_durable(self, since: int) -> int:
        """Hold back what comes next until the records appended after `since` are durable;
        the record waited for, 0 for none."""
        store = self.ctx.store
        seq = store.seq
        if seq != since and not store.is_durable(seq):
            self.peer.put(WaitDurable(seq))
            return seq
        return 0

    def denied(self) -> ReasonCode:
        """The MQTT 5 code for what the ACL refuses: 0x87, or 0x80 for a broker that does not
        reveal why (5.0 sections 3.4.2.1 and 3.9.3 allow it)."""
        if self.ctx.config.broker.reveal_denials:
            return ReasonCode.NOT_AUTHORIZED
        return ReasonCode.UNSPECIFIED_ERROR

    def connected_session(self) -> Session:
        """The session of a CONNECTED protocol (a handler runs only then)."""
        session = self.session
        assert session is not None, "a packet handler ran before CONNECT completed"
        return session

"""`ClientProtocol`: one connection's MQTT state machine, with no socket in it.

AWAIT_CONNECT -> AWAIT_AUTH -> CONNECTED -> CLOSED. `handle(packet)` applies one packet:
replies and deliveries go to the peer's outbox (`Peer.put`), and a reply that depends on
records being durable (PUBACK, PUBREC, PUBCOMP, SUBACK, UNSUBACK, CONNACK with a session) is
preceded by a `WaitDurable` marker so the writer holds it back until the store says so. A
protocol violation raises `MQTTError`; the connection turns that into bytes and a log line.

Nothing here waits. Checking a password takes a hash in a threadpool and a failed login a
delay, so a valid CONNECT is not answered by `handle`: it returns an `AuthRequest`, the
caller performs it (`Authority.authenticate`, in link/connection.py) and hands the verdict to
`authenticated(result)`, which answers the CONNECT (as h11 hands I/O back to its caller). In
between, the caller holds any later packet back; one that arrives anyway is a caller bug.

The state lives in `ProtocolState` (protocol_state.py); the handlers are functions of that
state and one packet, one module per family: connect_flow.py (CONNECT, DISCONNECT, the end of
a connection, wills), publish_flow.py (PUBLISH and the QoS 1/2 acknowledgements),
subscribe_flow.py. This module dispatches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..codec import (
    ConnAck,
    Connect,
    Disconnect,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    Subscribe,
    Unsubscribe,
)
from ..errors import ProtocolError
from . import connect_flow, publish_flow, subscribe_flow
from .protocol_state import (
    AWAIT_AUTH,
    AWAIT_CONNECT,
    CLIENT_DISCONNECT,
    CLOSED,
    CONNECT_TIMEOUT,
    CONNECTED,
    GONE,
    KEEPALIVE_TIMEOUT,
    PEER_CLOSED,
    SERVER_SHUTDOWN,
    TAKEOVER,
    Authority,
    AuthRequest,
    AuthResult,
    CloseReason,
    OpenAuthority,
    ProtocolState,
    SecuritySource,
)

__all__ = ["AWAIT_AUTH", "AWAIT_CONNECT", "CLIENT_DISCONNECT", "CLOSED", "CONNECTED",
           "CONNECT_TIMEOUT", "GONE", "KEEPALIVE_TIMEOUT", "PEER_CLOSED", "SERVER_SHUTDOWN",
           "TAKEOVER",
           "AuthRequest", "AuthResult", "Authority", "ClientProtocol", "CloseReason",
           "OpenAuthority", "SecuritySource"]


class ClientProtocol(ProtocolState):
    __slots__ = ()

    def handle(self, packet: Any) -> AuthRequest | None:
        """Apply one packet from the client. A CONNECT that passes the checks needing no
        credentials returns the `AuthRequest` to perform; its verdict goes to
        `authenticated`, and no packet may be handed in before it."""
        if self.state is CONNECTED:
            handler = _HANDLERS.get(type(packet))
            if handler is None:
                if isinstance(packet, Connect):
                    raise ProtocolError("second CONNECT on one connection [MQTT-3.1.0-2]")
                raise ProtocolError(f"unexpected {type(packet).__name__} from a client")
            handler(self, packet)
        elif self.state is AWAIT_CONNECT:
            if not isinstance(packet, Connect):
                raise ProtocolError(f"first packet is {type(packet).__name__}, not CONNECT "
                                    "[MQTT-3.1.0-1]")
            return connect_flow.on_connect(self, packet)
        elif self.state is AWAIT_AUTH:
            raise RuntimeError(f"{type(packet).__name__} handed in before the CONNECT's "
                               "verdict: the caller must hold it until authenticated()")
        # CLOSED: late packets of a closing connection are ignored
        return None

    def authenticated(self, verdict: AuthResult) -> None:
        """The verdict on the CONNECT `handle` returned an `AuthRequest` for."""
        connect_flow.authenticated(self, verdict)

    def connection_lost(self, reason: CloseReason) -> None:
        """The connection is gone (or going): will, session bookkeeping, the log line."""
        connect_flow.connection_lost(self, reason)

    def store_failed(self) -> ConnAck | None:
        """The store cannot write what the CONNACK waits for: the refusal to send instead,
        with the session undone; None if the CONNACK was sent."""
        return connect_flow.store_failed(self)

    def refresh_rules(self) -> None:
        """After a reload: this client's ACL rules from the listener's new security."""
        if self.state is CONNECTED:
            self.rules = self.source.security.rules(self.client_id, self.username)
            self.connected_session().rules = self.rules


def _on_pingreq(proto: ProtocolState, packet: PingReq) -> None:
    proto.peer.put(PingResp())


# Packet type -> handler, for a connected client. CONNECT is handled apart (state change).
_HANDLERS: dict[type, Callable[[ProtocolState, Any], None]] = {
    Publish: publish_flow.on_publish,
    PubAck: publish_flow.on_puback,
    PubRec: publish_flow.on_pubrec,
    PubRel: publish_flow.on_pubrel,
    PubComp: publish_flow.on_pubcomp,
    Subscribe: subscribe_flow.on_subscribe,
    Unsubscribe: subscribe_flow.on_unsubscribe,
    PingReq: _on_pingreq,
    Disconnect: connect_flow.on_disconnect,
}

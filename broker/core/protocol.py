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
`connection_lost(reason)` ends the session's connection: the will is published unless the
client said DISCONNECT [MQTT-3.1.2-8] [MQTT-3.14.4-3], a clean session is discarded.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..auth.acl import Rules
from ..codec import (
    MQTT_3_1,
    MQTT_5,
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
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
    Will,
    encode_puback_success,
    encode_pubcomp_success,
    encode_pubrec_success,
)
from ..errors import MQTTError, ProtocolError, ReasonCode, StoreUnavailable
from ..topics import validate_filter
from .context import BrokerContext
from .message import Message
from .session import Peer, Session, WaitDurable

log = logging.getLogger("greenfly.connection")

AWAIT_CONNECT, AWAIT_AUTH, CONNECTED, CLOSED = "await-connect", "await-auth", "connected", \
    "closed"
SUBACK_FAILURE = 0x80


@dataclass(frozen=True, slots=True)
class CloseReason:
    """Why a connection ended: what the log says, and whether the will goes out."""

    text: str
    publish_will: bool = True
    reason_code: int = ReasonCode.UNSPECIFIED_ERROR

    @staticmethod
    def protocol_error(exc: MQTTError) -> CloseReason:
        kind = "malformed packet" if exc.reason_code == ReasonCode.MALFORMED_PACKET else \
            "protocol error"
        return CloseReason(f"{kind}: {exc.message}", True, exc.reason_code)

    @staticmethod
    def socket_error(detail: str) -> CloseReason:
        return CloseReason(f"socket error: {detail}")


CLIENT_DISCONNECT = CloseReason("client DISCONNECT", False, ReasonCode.SUCCESS)
PEER_CLOSED = CloseReason("socket closed by peer")
KEEPALIVE_TIMEOUT = CloseReason("keepalive timeout", True, ReasonCode.KEEP_ALIVE_TIMEOUT)
TAKEOVER = CloseReason("session taken over by a new connection", True,
                       ReasonCode.SESSION_TAKEN_OVER)
SERVER_SHUTDOWN = CloseReason("server shutdown", True, ReasonCode.SERVER_SHUTTING_DOWN)
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

    def authenticate(self, request: AuthRequest) -> AuthResult:
        """The verdict on a CONNECT. May block the calling greenlet (hashing, the delay after
        a failure), so the connection calls it, never the protocol."""
        ...

    def rules(self, client_id: str, username: str | None) -> Rules | None:
        ...


class OpenAuthority:
    """Everyone may connect and touch everything (but `$SYS`): a connection built without a
    listener, as in unit tests, or a broker section with `allow_anonymous` and nothing else."""

    def authenticate(self, request: AuthRequest) -> AuthResult:
        return AuthResult(ReasonCode.SUCCESS, request.username)

    def rules(self, client_id: str, username: str | None) -> Rules | None:
        return None


class SecuritySource(Protocol):
    """Where a connection finds the rules in force: its listener (replaced on reload)."""

    security: Authority


class _Open:
    security: Authority = OpenAuthority()


_OPEN = _Open()


class ClientProtocol:
    __slots__ = ("ctx", "peer", "address", "source", "identity", "rules", "state",
                 "client_id", "protocol_level", "keepalive", "clean", "username", "will",
                 "session", "connected_at", "close_after_flush", "_connect")

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
        self._connect: Connect | None = None  # the CONNECT awaiting its verdict

    def describe(self) -> str:
        who = self.client_id or "(no client id yet)"
        return f"{who} from {self.address}"

    # -- entry points ------------------------------------------------------------------------

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
            return self._on_connect(packet)
        elif self.state is AWAIT_AUTH:
            raise RuntimeError(f"{type(packet).__name__} handed in before the CONNECT's "
                               "verdict: the caller must hold it until authenticated()")
        # CLOSED: late packets of a closing connection are ignored
        return None

    def connection_lost(self, reason: CloseReason) -> None:
        """The connection is gone (or going): will, session bookkeeping, the log line."""
        if self.state is not CONNECTED:
            self.state = CLOSED
            self._connect = None  # a verdict still on its way finds nobody waiting
            return
        self.state = CLOSED
        ctx = self.ctx
        ctx.stats.client_disconnected()
        session = self.session
        if reason.publish_will and self.will is not None:  # [MQTT-3.1.2-8]
            self._publish_will(self.will)
        self.will = None
        if session is not None and session.detach(self.peer) and not session.persistent:
            ctx.registry.remove(session)
        duration = time.monotonic() - self.connected_at
        log.info("client disconnected: %s reason=%s duration=%.1fs", self.describe(),
                 reason.text, duration)
        ctx.disconnects.ended(self.client_id, self.keepalive, duration,
                              reason is PEER_CLOSED or reason.text.startswith("socket error"))

    # -- CONNECT -----------------------------------------------------------------------------

    def _refuse(self, reason: ReasonCode, why: str) -> None:
        self.peer.put(ConnAck(reason, False))
        self.close_after_flush = CloseReason(f"connection refused: {why}", False, reason)
        self.state = CLOSED
        log.info("connection refused: %s from %s: %s", self.client_id or "(empty client id)",
                 self.address, why)

    def _on_connect(self, packet: Connect) -> AuthRequest | None:
        ctx = self.ctx
        config = ctx.config
        self.protocol_level = packet.protocol_level
        self.client_id = packet.client_id
        if packet.protocol_level >= MQTT_5:
            self._refuse(ReasonCode.UNSUPPORTED_PROTOCOL_VERSION,
                         "MQTT 5 is not supported yet; use MQTT 3.1.1")
            return None
        if not packet.client_id:
            if not packet.clean_start or packet.protocol_level == MQTT_3_1:
                self._refuse(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
                             "empty client id needs clean session 1 [MQTT-3.1.3-8]")
                return None
            self.client_id = f"auto-{str(uuid.uuid4()).upper()}"
        max_keepalive = config.limits.max_keepalive
        if max_keepalive and packet.keepalive > max_keepalive:
            self._refuse(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
                         f"keepalive {packet.keepalive} exceeds max_keepalive {max_keepalive}")
            return None
        self.state = AWAIT_AUTH
        self._connect = packet
        host = self.address.rsplit(":", 1)[0].strip("[]")
        return AuthRequest(packet.username, packet.password, host, self.identity)

    def authenticated(self, verdict: AuthResult) -> None:
        """The verdict on the CONNECT `handle` returned an `AuthRequest` for: CONNACK, and on
        success the session (taking over a live one) and the CONNECTED state."""
        packet = self._connect
        if self.state is not AWAIT_AUTH or packet is None:
            raise RuntimeError(f"a verdict in state {self.state}: no CONNECT awaits one")
        self._connect = None
        if verdict.reason != ReasonCode.SUCCESS:
            user = f"user={verdict.username} " if verdict.username is not None else ""
            self._refuse(verdict.reason, f"{user}{verdict.why}")
            return
        ctx = self.ctx
        username = verdict.username
        # The listener's security as it is now: a reload during the check has replaced it.
        self.rules = self.source.security.rules(self.client_id, username)
        registry = ctx.registry
        since = ctx.store.seq
        previous = registry.get(self.client_id)
        if previous is not None and previous.peer is not None:
            previous.peer.terminate(TAKEOVER)  # [MQTT-3.1.4-2]
        session, present = registry.open(self.client_id, packet.clean_start,
                                         packet.protocol_level)
        self.session = session
        session.rules = self.rules
        self.keepalive = packet.keepalive
        self.clean = packet.clean_start
        self.username = username
        self.will = packet.will
        self.state = CONNECTED
        self.connected_at = time.monotonic()
        ctx.stats.client_connected()
        self._wait_durable(since)
        self.peer.put(ConnAck(ReasonCode.SUCCESS, present))
        session.attach(self.peer)
        log.info("client connected: %s protocol=%d keepalive=%d clean=%d session_present=%d%s",
                 self.describe(), packet.protocol_level, packet.keepalive,
                 int(packet.clean_start), int(present),
                 f" user={username}" if username is not None else "")

    def _publish_will(self, will: Will) -> None:
        message = Message(will.topic, will.payload, will.qos, will.retain, will.properties,
                          self.client_id)
        self.ctx.router.publish(message)

    # -- PUBLISH and its acknowledgements ----------------------------------------------------

    def _wait_durable(self, since: int) -> None:
        """Hold back what comes next until the records appended after `since` are durable."""
        store = self.ctx.store
        seq = store.seq
        if seq != since and not store.is_durable(seq):
            self.peer.put(WaitDurable(seq))

    def _on_publish(self, packet: Publish) -> None:
        ctx = self.ctx
        stats = ctx.stats
        stats.publish_received += 1
        stats.publish_bytes_received += len(packet.payload)
        qos = packet.qos
        topic = packet.topic
        message = Message(topic, packet.payload, qos, packet.retain, packet.properties,
                          self.client_id)
        if packet.forwardable is not None:
            message.forward_as_received(packet.forwardable)
        rules = self.rules
        if topic.startswith("$SYS") or (rules is not None and not rules.can_publish(topic)):
            # Not forwarded, but acknowledged as usual: 3.1.1 has no way to say "denied".
            log.debug("%s: publish to %r denied", self.describe(), topic)
            self._acknowledge_denied(packet)
            return
        if qos == 0:
            ctx.router.publish(message)
            return
        store = ctx.store
        if store.failure is not None:
            # Nothing it publishes now can be made durable: no PUBACK/PUBREC, and the client
            # sends it again after reconnecting (v3.1.1 has no negative acknowledgement).
            raise StoreUnavailable(f"QoS {qos} publish refused: the journal cannot be "
                                   f"written ({store.failure})")
        since = store.seq
        if qos == 1:
            ctx.router.publish(message)
            self._wait_durable(since)
            self.peer.put(encode_puback_success(packet.packet_id))
            return
        assert self.session is not None
        if self.session.receive_qos2(packet.packet_id):
            ctx.router.publish(message)
        self._wait_durable(since)
        self.peer.put(encode_pubrec_success(packet.packet_id))

    def _acknowledge_denied(self, packet: Publish) -> None:
        if packet.qos == 1:
            self.peer.put(encode_puback_success(packet.packet_id))
        elif packet.qos == 2:
            # The id still goes through the exactly-once flow so that PUBREL finds it.
            since = self.ctx.store.seq
            assert self.session is not None
            self.session.receive_qos2(packet.packet_id)
            self._wait_durable(since)
            self.peer.put(encode_pubrec_success(packet.packet_id))

    def refresh_rules(self) -> None:
        """After a reload: this client's ACL rules from the listener's new security."""
        if self.state is CONNECTED:
            self.rules = self.source.security.rules(self.client_id, self.username)
            assert self.session is not None
            self.session.rules = self.rules

    def _on_pubrel(self, packet: PubRel) -> None:
        since = self.ctx.store.seq
        assert self.session is not None
        self.session.release_qos2(packet.packet_id)
        self._wait_durable(since)
        self.peer.put(encode_pubcomp_success(packet.packet_id))

    def _on_puback(self, packet: PubAck) -> None:
        assert self.session is not None
        if not self.session.on_puback(packet.packet_id):
            log.debug("%s: PUBACK for packet id %d that is not in flight", self.describe(),
                      packet.packet_id)

    def _on_pubrec(self, packet: PubRec) -> None:
        assert self.session is not None
        if not self.session.on_pubrec(packet.packet_id):
            log.debug("%s: PUBREC for packet id %d that is not in flight", self.describe(),
                      packet.packet_id)

    def _on_pubcomp(self, packet: PubComp) -> None:
        assert self.session is not None
        if not self.session.on_pubcomp(packet.packet_id):
            log.debug("%s: PUBCOMP for packet id %d that is not awaiting it", self.describe(),
                      packet.packet_id)

    # -- SUBSCRIBE / UNSUBSCRIBE -------------------------------------------------------------

    def _on_subscribe(self, packet: Subscribe) -> None:
        for topic_filter, _options in packet.subscriptions:
            validate_filter(topic_filter)
        ctx = self.ctx
        session = self.session
        assert session is not None
        granted = []
        since = ctx.store.seq
        rules = self.rules
        for topic_filter, options in packet.subscriptions:
            if rules is not None and not rules.can_subscribe(topic_filter):
                log.debug("%s: subscription to %r denied", self.describe(), topic_filter)
                granted.append(SUBACK_FAILURE)
                continue
            qos = options.qos
            ctx.tree.subscribe(self.client_id, topic_filter, qos)
            session.add_subscription(topic_filter, options)
            granted.append(qos)
        self._wait_durable(since)
        self.peer.put(SubAck(packet.packet_id, tuple(granted)))
        for (topic_filter, _options), qos in zip(packet.subscriptions, granted, strict=True):
            if qos != SUBACK_FAILURE:
                ctx.router.send_retained(session, topic_filter, qos)

    def _on_unsubscribe(self, packet: Unsubscribe) -> None:
        for topic_filter in packet.filters:
            validate_filter(topic_filter)
        ctx = self.ctx
        since = ctx.store.seq
        assert self.session is not None
        for topic_filter in packet.filters:
            ctx.tree.unsubscribe(self.client_id, topic_filter)
            self.session.remove_subscription(topic_filter)
        self._wait_durable(since)
        self.peer.put(UnsubAck(packet.packet_id))

    # -- the rest ----------------------------------------------------------------------------

    def _on_pingreq(self, packet: PingReq) -> None:
        self.peer.put(PingResp())

    def _on_disconnect(self, packet: Disconnect) -> None:
        self.will = None  # [MQTT-3.14.4-3]
        self.close_after_flush = CLIENT_DISCONNECT


# Packet type -> handler, for a connected client. CONNECT is handled apart (state change).
_HANDLERS: dict[type, Callable[[ClientProtocol, Any], None]] = {
    Publish: ClientProtocol._on_publish,
    PubAck: ClientProtocol._on_puback,
    PubRec: ClientProtocol._on_pubrec,
    PubRel: ClientProtocol._on_pubrel,
    PubComp: ClientProtocol._on_pubcomp,
    Subscribe: ClientProtocol._on_subscribe,
    Unsubscribe: ClientProtocol._on_unsubscribe,
    PingReq: ClientProtocol._on_pingreq,
    Disconnect: ClientProtocol._on_disconnect,
}

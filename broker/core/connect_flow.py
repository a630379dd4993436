"""CONNECT, CONNACK, DISCONNECT and the end of a connection, for MQTT 3.1, 3.1.1 and 5.0.

One path for every level: MQTT 5 adds properties both ways and a few answers 3.x has no words
for, it is not a second protocol. What differs, and why:
- Session lifetime. 3.x: clean session 0 keeps the session until `persistent_client_expiration`;
  5.0: the session expiry interval says it (0 ends it with the connection, 0xFFFFFFFF never;
  5.0 section 3.1.2.11.2), independent of clean start, and DISCONNECT may change it, but never
  from 0 (5.0 section 3.14.2.2.2).
- An empty client id. 3.1.1 needs clean session 1 [MQTT-3.1.3-8]; 5.0 takes any and tells the
  client the id it got (assigned client identifier, 5.0 section 3.2.2.3.7).
- A keepalive above `max_keepalive`. 3.x is refused (Mosquitto >= 2.0.12 does the same);
  5.0 is told the server keep alive it must use instead (5.0 section 3.2.2.3.14).
- The will. 5.0's will delay interval holds it back, until min(delay, session expiry), and a
  reconnect in time cancels it (5.0 section 3.1.3.2.2); DISCONNECT with 0x04 still sends it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..codec import MQTT_3_1, MQTT_5, ConnAck, Connect, Disconnect, Will
from ..errors import ProtocolError, ReasonCode
from .bridge_session import BRIDGE_SESSION_PREFIX
from .client_limits import DEFAULT_RECEIVE_MAXIMUM, own_limits, receive_maximum
from .message import Message
from .protocol_state import (
    AWAIT_AUTH,
    CLIENT_DISCONNECT,
    CLOSED,
    CONNECTED,
    PEER_CLOSED,
    TAKEOVER,
    AuthRequest,
    AuthResult,
    CloseReason,
    ProtocolState,
)

log = logging.getLogger("greenfly.connection")

SESSION_NEVER_EXPIRES = 0xFFFF_FFFF
MAX_PACKET_SIZE = 268_435_455  # what the remaining length can say, plus the header's bytes


def refuse(proto: ProtocolState, reason: ReasonCode, why: str) -> None:
    """Answer the CONNECT with a failure and close after it is written."""
    props: dict[str, Any] = {}
    if proto.protocol_level >= MQTT_5:
        props["reason_string"] = why[:200]
    proto.peer.put(ConnAck(reason, False, props))
    proto.close_after_flush = CloseReason(f"connection refused: {why}", False, reason)
    proto.state = CLOSED
    log.info("connection refused: %s from %s: %s", proto.client_id or "(empty client id)",
             proto.address, why)


def on_connect(proto: ProtocolState, packet: Connect) -> AuthRequest | None:
    """Check what needs no credentials; return the credentials' check to perform, or None
    when the CONNECT was refused already."""
    config = proto.ctx.config
    level = packet.protocol_level
    proto.protocol_level = level
    proto.client_id = packet.client_id
    proto.bridge = packet.bridge
    v5 = level >= MQTT_5
    if v5 and not _take_v5_properties(proto, packet):
        return None
    if not packet.client_id:
        if not v5 and (not packet.clean_start or level == MQTT_3_1):
            refuse(proto, ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
                   "empty client id needs clean session 1 [MQTT-3.1.3-8]")
            return None
        import uuid  # here: uuid loads platform, a cold-start cost for the rare empty id

        proto.client_id = f"auto-{str(uuid.uuid4()).upper()}"
    elif packet.client_id.startswith(BRIDGE_SESSION_PREFIX):
        refuse(proto, ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
               f"client ids starting with {BRIDGE_SESSION_PREFIX!r} are the broker's bridges'")
        return None
    max_keepalive = config.limits.max_keepalive
    if not v5 and max_keepalive and packet.keepalive > max_keepalive:
        refuse(proto, ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
               f"keepalive {packet.keepalive} exceeds max_keepalive {max_keepalive}")
        return None
    proto.state = AWAIT_AUTH
    proto.pending_connect = packet
    host = proto.address.rsplit(":", 1)[0].strip("[]")
    return AuthRequest(packet.username, packet.password, host, proto.identity)


def _take_v5_properties(proto: ProtocolState, packet: Connect) -> bool:
    """Read an MQTT 5 CONNECT's properties into the connection's limits; False if refused."""
    props = packet.properties
    if "authentication_method" in props:
        # Enhanced authentication is not offered: the spec's answer is CONNACK 0x8C
        # (5.0 section 4.12: a method the server does not support).
        refuse(proto, ReasonCode.BAD_AUTHENTICATION_METHOD,
               f"authentication method {props['authentication_method']!r} is not supported")
        return False
    client_receive = props.get("receive_maximum", DEFAULT_RECEIVE_MAXIMUM)
    if client_receive == 0:
        raise ProtocolError("CONNECT: receive maximum 0 (5.0 section 3.1.2.11.3)")
    maximum_packet_size = props.get("maximum_packet_size", 0)
    if "maximum_packet_size" in props and maximum_packet_size == 0:
        raise ProtocolError("CONNECT: maximum packet size 0 (5.0 section 3.1.2.11.4)")
    limits = proto.limits = own_limits(proto.limits)  # the shared defaults are never written
    limits.receive_maximum = client_receive
    limits.maximum_packet_size = maximum_packet_size
    limits.topic_alias_maximum = props.get("topic_alias_maximum", 0)
    limits.request_problem_information = props.get("request_problem_information", 1) == 1
    limits.request_response_information = props.get("request_response_information", 0) == 1
    limits.session_expiry = props.get("session_expiry_interval", 0)
    return True


def authenticated(proto: ProtocolState, verdict: AuthResult) -> None:
    """The verdict on the CONNECT `on_connect` asked about: CONNACK, and on success the
    session (taking over a live one) and the CONNECTED state."""
    packet = proto.pending_connect
    if proto.state is not AWAIT_AUTH or packet is None:
        raise RuntimeError(f"a verdict in state {proto.state}: no CONNECT awaits one")
    proto.pending_connect = None
    if verdict.reason != ReasonCode.SUCCESS:
        proto.ctx.stats.auth_failures += 1
        user = f"user={verdict.username} " if verdict.username is not None else ""
        refuse(proto, verdict.reason, f"{user}{verdict.why}")
        return
    ctx = proto.ctx
    username = verdict.username
    v5 = proto.protocol_level >= MQTT_5
    # The listener's security as it is now: a reload during the check has replaced it.
    proto.rules = proto.source.security.rules(proto.client_id, username)
    registry = ctx.registry
    if v5:
        persistent, expiry = proto.limits.session_expiry > 0, proto.limits.session_expiry
    else:
        persistent, expiry = not packet.clean_start, 0
    previous = registry.get(proto.client_id)
    resuming = previous is not None and previous.persistent and not packet.clean_start
    if persistent and not resuming and _refused_for_store(proto):
        return
    since = ctx.store.seq
    if previous is not None and previous.peer is not None:
        previous.peer.terminate(TAKEOVER)  # [MQTT-3.1.4-2]
    # A will held back by its delay: a new connection to the session cancels it, one that
    # ends the session (clean start) sends it now (5.0 section 3.1.3.2.2).
    held = ctx.wills.take(proto.client_id)
    if held is not None and packet.clean_start:
        ctx.router.publish(held)
    session, present = registry.open(proto.client_id, packet.clean_start,
                                     packet.protocol_level, expiry, persistent)
    proto.session = session
    session.rules = proto.rules
    proto.keepalive = packet.keepalive
    proto.clean = packet.clean_start
    proto.username = username
    proto.will = packet.will
    proto.state = CONNECTED
    proto.connected_at = time.monotonic()
    ctx.stats.client_connected()
    if not present:
        # A new persistent session exists once its records are on disk, a deleted one is
        # gone once its deletion is. A resumed one is on disk already: its CONNACK waits for
        # no new bytes, so it resumes on a full disk.
        proto.connack_waits_for = proto.wait_durable(since)
    proto.peer.put(ConnAck(ReasonCode.SUCCESS, present,
                           _connack_properties(proto, packet) if v5 else {}))
    session.attach(proto.peer, proto.limits)
    if log.isEnabledFor(logging.INFO):  # not formatted per connect at the default level
        log.info("client connected: %s protocol=%d keepalive=%d clean=%d session_present=%d%s",
                 proto.describe(), packet.protocol_level, proto.keepalive,
                 int(packet.clean_start), int(present),
                 f" user={username}" if username is not None else "",
                 extra={"client_id": proto.client_id, "address": proto.address})


def _refused_for_store(proto: ProtocolState) -> bool:
    """A new persistent session is a promise the journal must keep: while it cannot be
    written (disk full), refuse it with 0x03 (MQTT 5: 0x97 quota exceeded) and say why."""
    failure = proto.ctx.store.failure
    if failure is None:
        return False
    reason = (ReasonCode.QUOTA_EXCEEDED if proto.protocol_level >= MQTT_5
              else ReasonCode.SERVER_UNAVAILABLE)
    refuse(proto, reason, f"no new persistent session while the journal cannot be written: "
           f"{failure}")
    return True


def store_failed(proto: ProtocolState) -> ConnAck | None:
    """The store cannot write the records this connection's CONNACK waits for (the disk
    filled before anyone noticed): undo the session it opened and return the refusal to send
    instead, 0x03 (MQTT 5: 0x97), as for a new persistent session on a disk known to be full.
    None when the CONNACK went out already (a later acknowledgement failed)."""
    seq = proto.connack_waits_for
    ctx = proto.ctx
    if proto.state is not CONNECTED or not seq or ctx.store.is_durable(seq):
        return None
    proto.connack_waits_for = 0
    proto.state = CLOSED  # never connected: no will, no "client disconnected" line
    proto.will = None
    ctx.stats.client_disconnected()
    session = proto.session
    if session is not None and session.detach(proto.peer):
        # Its opening records are still pending: the deletion joins them, so whenever the
        # disk has room again the journal ends up without the session, as memory does now.
        ctx.registry.remove(session)
    reason = (ReasonCode.QUOTA_EXCEEDED if proto.protocol_level >= MQTT_5
              else ReasonCode.SERVER_UNAVAILABLE)
    why = f"its session's records cannot be written to the journal: {ctx.store.failure}"
    props = {"reason_string": why[:200]} if proto.protocol_level >= MQTT_5 else {}
    proto.close_after_flush = CloseReason(f"connection refused: {why}", False, reason)
    log.info("connection refused: %s from %s: %s", proto.client_id, proto.address, why)
    return ConnAck(reason, False, props)


def _connack_properties(proto: ProtocolState, packet: Connect) -> dict[str, Any]:
    """What an MQTT 5 client needs to know: only what differs from the spec's defaults."""
    config = proto.ctx.config
    limits = config.limits
    props: dict[str, Any] = {}
    if not packet.client_id:
        props["assigned_client_identifier"] = proto.client_id  # 5.0 section 3.2.2.3.7
    max_keepalive = limits.max_keepalive
    if max_keepalive and packet.keepalive > max_keepalive:
        proto.keepalive = max_keepalive
        props["server_keep_alive"] = max_keepalive  # 5.0 section 3.2.2.3.14
    ours = receive_maximum(limits)
    if ours < DEFAULT_RECEIVE_MAXIMUM:
        props["receive_maximum"] = ours
    if limits.max_packet_size < MAX_PACKET_SIZE:
        props["maximum_packet_size"] = limits.max_packet_size
    if limits.max_topic_alias:
        props["topic_alias_maximum"] = limits.max_topic_alias
    if not config.broker.retain_available:
        props["retain_available"] = 0
    prefix = config.broker.response_information
    if prefix and proto.limits.request_response_information:
        props["response_information"] = f"{prefix}/{proto.client_id}"
    return props


def on_disconnect(proto: ProtocolState, packet: Disconnect) -> None:
    """The client says goodbye: no will unless it asks for one (0x04) [MQTT-3.14.4-3]."""
    if proto.protocol_level >= MQTT_5:
        expiry = packet.properties.get("session_expiry_interval")
        if expiry is not None:
            if proto.limits.session_expiry == 0 and expiry != 0:
                raise ProtocolError("DISCONNECT sets a session expiry interval on a session "
                                    "that had 0 (5.0 section 3.14.2.2.2)")
            limits = proto.limits = own_limits(proto.limits)
            limits.session_expiry = expiry
            proto.connected_session().set_expiry(expiry)
        if packet.reason_code == ReasonCode.DISCONNECT_WITH_WILL:
            proto.close_after_flush = CloseReason("client DISCONNECT with will", True,
                                                  ReasonCode.SUCCESS, notify=False)
            return
    proto.will = None  # [MQTT-3.14.4-3]
    proto.close_after_flush = CLIENT_DISCONNECT


def connection_lost(proto: ProtocolState, reason: CloseReason) -> None:
    """The connection is gone (or going): will, session bookkeeping, the log line."""
    if proto.state is not CONNECTED:
        proto.state = CLOSED
        proto.pending_connect = None  # a verdict still on its way finds nobody waiting
        return
    proto.state = CLOSED
    ctx = proto.ctx
    ctx.stats.client_disconnected()
    session = proto.session
    will = proto.will
    proto.will = None
    if reason.publish_will and will is not None:  # [MQTT-3.1.2-8]
        _will_goes_out(proto, will)
    if session is not None and session.detach(proto.peer) and not session.persistent:
        ctx.registry.remove(session)
    duration = time.monotonic() - proto.connected_at
    log.info("client disconnected: %s reason=%s duration=%.1fs", proto.describe(),
             reason.text, duration, extra={"client_id": proto.client_id,
                                           "address": proto.address, "reason": reason.text})
    ctx.disconnects.ended(proto.client_id, proto.keepalive, duration,
                          reason is PEER_CLOSED or reason.text.startswith("socket error"))


def _will_goes_out(proto: ProtocolState, will: Will) -> None:
    """Now, or after the will delay interval (bounded by the session's own end)."""
    message = will_message(proto.client_id, will)
    delay = will.properties.get("will_delay_interval", 0) if will.properties else 0
    session = proto.session
    if delay and session is not None and session.persistent:
        expiry = proto.limits.session_expiry
        if expiry != SESSION_NEVER_EXPIRES:
            delay = min(delay, expiry)
        proto.ctx.wills.hold(proto.client_id, message, time.monotonic() + delay)
        return
    proto.ctx.router.publish(message)


def will_message(client_id: str, will: Will) -> Message:
    """The application message a will becomes."""
    return Message(will.topic, will.payload, will.qos, will.retain,
                   _without_delay(will.properties), client_id)


def _without_delay(properties: Any) -> Any:
    """A will's properties as its message carries them: the delay is the broker's business."""
    if not properties or "will_delay_interval" not in properties:
        return properties
    return {k: v for k, v in properties.items() if k != "will_delay_interval"}

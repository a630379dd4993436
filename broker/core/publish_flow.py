"""PUBLISH from a client and the acknowledgements of both directions' QoS 1/2 flows.

Inbound: the topic (an MQTT 5 topic alias resolved first), the ACL, then the router; the
PUBACK/PUBREC waits (a `WaitDurable` in the outbox) until what the publish wrote is durable.
MQTT 3.1.1 cannot say "denied" or "nobody listens", so such publishes are acknowledged as
usual; MQTT 5 says it: 0x87 not authorized, 0x10 no matching subscribers, 0x97 quota exceeded
when every subscriber dropped it (5.0 3.4.2.1).
An MQTT 5 payload that says it is UTF-8 (payload format indicator 1) and is not goes nowhere:
0x99 on its PUBACK/PUBREC, dropped at QoS 0 (5.0 sections 3.3.2.3.2 and 4.13).
Outbound acks from the client move the session's in-flight window.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ..codec import (
    MQTT_5,
    NO_PROPERTIES,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    encode_puback_success,
    encode_pubcomp_success,
    encode_pubrec_success,
)
from ..errors import MQTTError, ProtocolError, ReasonCode, StoreUnavailable
from .client_limits import receive_maximum
from .message import Message
from .protocol_state import ProtocolState
from .router import ALL_DROPPED

log = logging.getLogger("greenfly.connection")

# Properties that belong to one hop, not to the message: never forwarded
# (5.0 sections 3.3.2.3.4 and 3.3.2.3.8: alias per connection, identifiers per delivery).
_HOP_PROPERTIES = frozenset({"topic_alias", "subscription_identifier"})


def on_publish(proto: ProtocolState, packet: Publish) -> None:
    ctx = proto.ctx
    stats = ctx.stats
    stats.publish_received += 1
    stats.publish_bytes_received += len(packet.payload)
    qos = packet.qos
    topic = packet.topic
    properties = packet.properties
    v5 = proto.protocol_level >= MQTT_5
    if packet.retain and not ctx.config.broker.retain_available:
        raise MQTTError("PUBLISH with retain 1, and retain_available is false (5.0 section "
                        "3.3.1.3)", ReasonCode.RETAIN_NOT_SUPPORTED)
    if v5 and properties is not NO_PROPERTIES:  # what the decoder gives for property length 0
        topic, properties = _v5_topic_and_properties(proto, packet)
        if properties.get("payload_format_indicator") == 1 and not _is_utf8(packet.payload):
            _refuse_payload_format(proto, packet, topic)
            return
    message = Message(topic, packet.payload, qos, packet.retain, properties, proto.client_id)
    if packet.forwardable is not None:
        message.forward_as_received(packet.forwardable, v5)
    rules = proto.rules
    if topic.startswith("$SYS") or (rules is not None and not rules.can_publish(topic)):
        log.debug("%s: publish to %r denied", proto.describe(), topic)
        _acknowledge_denied(proto, packet)
        return
    if qos == 0:
        ctx.router.publish(message)
        return
    store = ctx.store
    if store.failure is not None:
        # Nothing it publishes now can be made durable. MQTT 5 can say so: 0x97, and the
        # client decides (a failure PUBREC ends the exchange, 5.0 section 4.3.3). v3.1.1 has
        # no negative acknowledgement: no PUBACK/PUBREC, and the client sends it again after
        # reconnecting.
        if v5:
            log.warning("%s: QoS %d publish to %r refused with 0x97: the store cannot be "
                        "written (%s)", proto.describe(), qos, topic, store.failure)
            ack = PubAck if qos == 1 else PubRec
            proto.peer.put(ack(packet.packet_id, ReasonCode.QUOTA_EXCEEDED))
            return
        raise StoreUnavailable(f"QoS {qos} publish refused: the journal cannot be "
                               f"written ({store.failure})")
    since = store.seq
    if qos == 1:
        delivered = ctx.router.publish(message)
        proto.wait_durable(since)
        if v5 and delivered <= 0:
            proto.peer.put(PubAck(packet.packet_id, _unrouted(delivered, message)))
        else:
            proto.peer.put(encode_puback_success(packet.packet_id))
        return
    session = proto.connected_session()
    delivered = 1
    if session.receive_qos2(packet.packet_id):  # [MQTT-4.3.3-2]
        if v5 and len(session.incoming_qos2) > receive_maximum(proto.ctx.config.limits):
            raise MQTTError("more unacknowledged QoS 2 PUBLISHes than the receive maximum "
                            "(5.0 section 3.3.4)", ReasonCode.RECEIVE_MAXIMUM_EXCEEDED)
        delivered = ctx.router.publish(message)
    proto.wait_durable(since)
    if v5 and delivered <= 0:
        code = _unrouted(delivered, message)
        if code >= 0x80:  # a failure PUBREC ends the exchange: no PUBREL will free the id
            session.release_qos2(packet.packet_id)  # (5.0 section 4.3.3)
        proto.peer.put(PubRec(packet.packet_id, code))
    else:
        proto.peer.put(encode_pubrec_success(packet.packet_id))


def _unrouted(delivered: int, message: Message) -> ReasonCode:
    """Why nobody took a message: nobody subscribed (0x10, a success), or every subscriber's
    limits dropped it (0x97 quota exceeded, a failure; 5.0 section 3.4.2.1) unless it was kept
    as the topic's retained message."""
    if delivered == ALL_DROPPED and not message.retain:
        return ReasonCode.QUOTA_EXCEEDED
    return ReasonCode.NO_MATCHING_SUBSCRIBERS


def _v5_topic_and_properties(proto: ProtocolState,
                             packet: Publish) -> tuple[str, Mapping[str, Any]]:
    """Resolve a topic alias (5.0 section 3.3.2.3.4) and drop the per-hop properties."""
    topic = packet.topic
    properties = packet.properties
    alias = properties.get("topic_alias")
    if alias is not None:
        maximum = proto.ctx.config.limits.max_topic_alias
        if alias == 0 or alias > maximum:
            raise MQTTError(f"topic alias {alias} outside 1..{maximum} (5.0 section 3.3.2.3.4)"
                            if maximum else f"topic alias {alias}, but none were offered "
                            "(5.0 section 3.3.2.3.4)", ReasonCode.TOPIC_ALIAS_INVALID)
        aliases = proto.limits.inbound_aliases
        if topic:
            if aliases is None:  # an MQTT 5 connection's own limits (connect_flow.py)
                aliases = proto.limits.inbound_aliases = {}
            aliases[alias] = topic
        else:
            known = aliases.get(alias) if aliases is not None else None
            if known is None:
                raise ProtocolError(f"topic alias {alias} was never set (5.0 section "
                                    "3.3.2.3.4)")
            topic = known
    elif not topic:
        raise ProtocolError("PUBLISH without topic name or topic alias (5.0 section 3.3.2.1)")
    if _HOP_PROPERTIES.isdisjoint(properties):
        return topic, properties
    return topic, {k: v for k, v in properties.items() if k not in _HOP_PROPERTIES}


def _is_utf8(payload: bytes) -> bool:
    """Well-formed UTF-8 as RFC 3629 has it (no surrogates, no overlong forms): what Python's
    strict decoder accepts."""
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _refuse_payload_format(proto: ProtocolState, packet: Publish, topic: str) -> None:
    """Not forwarded, not retained; a QoS 1/2 sender is told 0x99, and a failure PUBREC
    ends that exchange (5.0 section 4.3.3)."""
    log.debug("%s: publish to %r refused: payload format indicator 1 but the payload is not "
              "UTF-8", proto.describe(), topic)
    if packet.qos == 1:
        proto.peer.put(PubAck(packet.packet_id, ReasonCode.PAYLOAD_FORMAT_INVALID))
    elif packet.qos == 2:
        proto.peer.put(PubRec(packet.packet_id, ReasonCode.PAYLOAD_FORMAT_INVALID))
    else:
        proto.ctx.stats.publish_dropped += 1


def _acknowledge_denied(proto: ProtocolState, packet: Publish) -> None:
    v5 = proto.protocol_level >= MQTT_5
    if packet.qos == 1:
        proto.peer.put(PubAck(packet.packet_id, proto.denied()) if v5
                       else encode_puback_success(packet.packet_id))
    elif packet.qos == 2:
        if v5:
            # A failure PUBREC ends the exchange: no PUBREL follows (5.0 section 4.3.3).
            proto.peer.put(PubRec(packet.packet_id, proto.denied()))
            return
        # The id still goes through the exactly-once flow so that PUBREL finds it.
        since = proto.ctx.store.seq
        proto.connected_session().receive_qos2(packet.packet_id)
        proto.wait_durable(since)
        proto.peer.put(encode_pubrec_success(packet.packet_id))


def on_pubrel(proto: ProtocolState, packet: PubRel) -> None:
    since = proto.ctx.store.seq
    known = proto.connected_session().release_qos2(packet.packet_id)
    proto.wait_durable(since)
    if not known and proto.protocol_level >= MQTT_5:
        proto.peer.put(PubComp(packet.packet_id, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND))
        return
    proto.peer.put(encode_pubcomp_success(packet.packet_id))


def on_puback(proto: ProtocolState, packet: PubAck) -> None:
    if not proto.connected_session().on_puback(packet.packet_id):
        log.debug("%s: PUBACK for packet id %d that is not in flight", proto.describe(),
                  packet.packet_id)


def on_pubrec(proto: ProtocolState, packet: PubRec) -> None:
    session = proto.connected_session()
    if packet.reason_code >= 0x80:
        # A failure PUBREC ends the exchange for that message (5.0 section 4.3.3).
        session.abandon(packet.packet_id)
        return
    if not session.on_pubrec(packet.packet_id):
        log.debug("%s: PUBREC for packet id %d that is not in flight", proto.describe(),
                  packet.packet_id)


def on_pubcomp(proto: ProtocolState, packet: PubComp) -> None:
    if not proto.connected_session().on_pubcomp(packet.packet_id):
        log.debug("%s: PUBCOMP for packet id %d that is not awaiting it", proto.describe(),
                  packet.packet_id)

"""SUBSCRIBE and UNSUBSCRIBE: the topic tree, the session's record of its filters, the
answer with one code per filter, and the retained messages a new subscription is owed.

MQTT 3.1.1 answers a refused filter with 0x80 and an UNSUBACK with nothing; MQTT 5 says why
(0x87 not authorized, 0x8F invalid filter; 5.0 section 3.9.3), and whether an UNSUBSCRIBE found
anything (0x11; 5.0 section 3.11.3). An invalid filter closes a 3.1.1 connection (it has no code
for it); a 5.0 client gets 0x8F for that filter and keeps the others.
"""

from __future__ import annotations

import logging

from ..codec import MQTT_5, SubAck, Subscribe, UnsubAck, Unsubscribe
from ..errors import MQTTError, ReasonCode
from ..topics import parse_shared, validate_filter
from .protocol_state import ProtocolState

log = logging.getLogger("greenfly.connection")

SUBACK_FAILURE = 0x80


def on_subscribe(proto: ProtocolState, packet: Subscribe) -> None:
    v5 = proto.protocol_level >= MQTT_5
    invalid: set[int] = set()
    for index, (topic_filter, _options) in enumerate(packet.subscriptions):
        try:
            validate_filter(topic_filter)
        except MQTTError:
            if not v5:
                raise
            invalid.add(index)
    ctx = proto.ctx
    session = proto.connected_session()
    granted: list[int] = []
    since = ctx.store.seq
    rules = proto.rules
    for index, (topic_filter, options) in enumerate(packet.subscriptions):
        if index in invalid:
            granted.append(ReasonCode.TOPIC_FILTER_INVALID)
            continue
        if rules is not None and not rules.can_subscribe(topic_filter):
            log.debug("%s: subscription to %r denied", proto.describe(), topic_filter)
            granted.append(ReasonCode.NOT_AUTHORIZED if v5 else SUBACK_FAILURE)
            continue
        qos = options.qos
        ctx.tree.subscribe(proto.client_id, topic_filter, qos)
        session.add_subscription(topic_filter, options)
        granted.append(qos)
    proto.wait_durable(since)
    proto.peer.put(SubAck(packet.packet_id, tuple(granted)))
    for (topic_filter, _options), code in zip(packet.subscriptions, granted, strict=True):
        if code < SUBACK_FAILURE and parse_shared(topic_filter) is None:
            # Shared subscriptions get no retained messages (5.0 section 4.8.2).
            ctx.router.send_retained(session, topic_filter, code)


def on_unsubscribe(proto: ProtocolState, packet: Unsubscribe) -> None:
    v5 = proto.protocol_level >= MQTT_5
    ctx = proto.ctx
    since = ctx.store.seq
    session = proto.connected_session()
    codes: list[int] = []
    for topic_filter in packet.filters:
        try:
            validate_filter(topic_filter)
        except MQTTError:
            if not v5:
                raise
            codes.append(ReasonCode.TOPIC_FILTER_INVALID)
            continue
        ctx.tree.unsubscribe(proto.client_id, topic_filter)
        existed = session.remove_subscription(topic_filter)
        codes.append(ReasonCode.SUCCESS if existed else ReasonCode.NO_SUBSCRIPTION_EXISTED)
    proto.wait_durable(since)
    proto.peer.put(UnsubAck(packet.packet_id, tuple(codes) if v5 else ()))

"""SUBSCRIBE and UNSUBSCRIBE: the topic tree, the session's record of its filters, the
answer with one code per filter, and the retained messages a new subscription is owed.

MQTT 3.1.1 answers a refused filter with 0x80 and an UNSUBACK with nothing; MQTT 5 says why
(0x87 not authorized, or 0x80 when `reveal_denials = false`; 0x8F invalid filter; 5.0
section 3.9.3), and whether an UNSUBSCRIBE found
anything (0x11; 5.0 section 3.11.3). An invalid filter closes a 3.1.1 connection (it has no code
for it); a 5.0 client gets 0x8F for that filter and keeps the others.

MQTT 5's subscription options (5.0 section 3.8.3.1) go into the tree with the subscription
(no local, retain as published, the SUBSCRIBE's subscription identifier), except retain
handling, which is decided here: 0 sends the retained messages, 1 only for a subscription
that did not exist, 2 never. A shared subscription gets no retained messages (5.0 section
4.8.2), and a member that unsubscribes leaves its group's queued messages to the others.
A bridging broker's subscriptions (Mosquitto's bridge bit in its CONNECT) are no local and
retain as published, whatever its 3.1.1 SUBSCRIBE could say.
"""

from __future__ import annotations

import logging

from ..codec import MQTT_5, SubAck, SubOptions, Subscribe, UnsubAck, Unsubscribe
from ..errors import MQTTError, ProtocolError, ReasonCode
from ..topics import parse_shared, validate_filter
from .protocol_state import ProtocolState

log = logging.getLogger("greenfly.connection")

SUBACK_FAILURE = 0x80
MAX_SUBSCRIPTION_ID = 268_435_455  # what a variable byte integer holds


def on_subscribe(proto: ProtocolState, packet: Subscribe) -> None:
    v5 = proto.protocol_level >= MQTT_5
    invalid: set[int] = set()
    for index, (topic_filter, options) in enumerate(packet.subscriptions):
        try:
            shared = parse_shared(topic_filter) is not None
            validate_filter(topic_filter)
        except MQTTError:
            if not v5:
                raise
            invalid.add(index)
            continue
        if shared and options.no_local:
            raise ProtocolError(f"SUBSCRIBE: no local on the shared subscription {topic_filter!r} "
                                "[MQTT-3.8.3-4]")
    identifier = _subscription_identifier(packet) if v5 else 0
    ctx = proto.ctx
    session = proto.connected_session()
    granted: list[int] = []
    retained_owed: list[bool] = []
    since = ctx.store.seq
    rules = proto.rules
    for index, (topic_filter, options) in enumerate(packet.subscriptions):
        if index in invalid:
            granted.append(ReasonCode.TOPIC_FILTER_INVALID)
            retained_owed.append(False)
            continue
        if rules is not None and not rules.can_subscribe(topic_filter):
            log.debug("%s: subscription to %r denied", proto.describe(), topic_filter)
            granted.append(proto.denied() if v5 else SUBACK_FAILURE)
            retained_owed.append(False)
            continue
        qos = options.qos
        if proto.bridge and not options.no_local and parse_shared(topic_filter) is None:
            # A bridging broker never gets its own messages back (no local, so two bridged
            # brokers do not loop) and sees retained ones as such: as Mosquitto treats one.
            options = SubOptions(qos, True, True, options.retain_handling)
        existed = ctx.tree.subscribe(proto.client_id, topic_filter, qos, options.no_local,
                                     options.retain_as_published, identifier)
        session.add_subscription(topic_filter, options, identifier)
        granted.append(qos)
        handling = options.retain_handling  # always 0 in 3.x
        retained_owed.append(parse_shared(topic_filter) is None  # 5.0 section 4.8.2
                             and (handling == 0 or (handling == 1 and not existed)))
    proto.wait_durable(since)
    proto.peer.put(SubAck(packet.packet_id, tuple(granted)))
    for (topic_filter, _options), code, owed in zip(packet.subscriptions, granted,
                                                    retained_owed, strict=True):
        if owed:  # retain handling (5.0 section 3.8.3.1)
            # sent as the client reads them (core/retained_feed.py), never dropped for it
            proto.peer.produce(ctx.router.retained_feed(session, topic_filter, code,
                                                        identifier))


def _subscription_identifier(packet: Subscribe) -> int:
    """The SUBSCRIBE's subscription identifier, 0 when it has none (5.0 section 3.8.2.1.2)."""
    found = packet.properties.get("subscription_identifier")
    if not found:
        return 0
    if len(found) > 1:
        raise ProtocolError("SUBSCRIBE: more than one subscription identifier (5.0 section "
                            "3.8.2.1.2)")
    identifier: int = found[0]
    if not 0 < identifier <= MAX_SUBSCRIPTION_ID:
        raise ProtocolError(f"SUBSCRIBE: subscription identifier {identifier} outside "
                            "1..268435455 (5.0 section 3.8.2.1.2)")
    return identifier


def on_unsubscribe(proto: ProtocolState, packet: Unsubscribe) -> None:
    v5 = proto.protocol_level >= MQTT_5
    ctx = proto.ctx
    since = ctx.store.seq
    session = proto.connected_session()
    codes: list[int] = []
    left: list[str] = []
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
        if existed and parse_shared(topic_filter) is not None:
            left.append(topic_filter)
    if left:
        # What is queued for those groups goes to their other members; what is in flight
        # completes here [MQTT-3.10.4-3].
        ctx.router.hand_over(session, left, False)
    proto.wait_durable(since)
    proto.peer.put(UnsubAck(packet.packet_id, tuple(codes) if v5 else ()))

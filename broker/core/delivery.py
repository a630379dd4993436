"""One delivery of a message to a client, and what differs from one MQTT 5 delivery to the next.

A `Delivery` is a QoS 1/2 PUBLISH: what the session keeps in flight and the outbox writes.
A message is laid out once for every subscriber (core/message.py). An MQTT 5 delivery may
need bytes of its own (an `OwnDelivery`'s `data`; a QoS 0 one goes into the outbox as bytes):
- the message expiry interval says the time left, not the time given [MQTT-3.3.2-6];
- the subscription identifiers of the subscriptions it matched, every one (5.0 section
  3.3.2.3.8), kept with it for a resend;
- an outbound topic alias, within the client's topic alias maximum (5.0 section 3.3.2.3.4).
  Policy: a topic gets the next free alias the first time it is sent on a connection, until
  the client's maximum is used up; later topics go without. The first PUBLISH of a topic
  carries topic and alias, the next ones an empty topic and the alias. Aliases live as long
  as the connection (`ClientLimits.outbound_aliases`), so a reconnect starts afresh
  [MQTT-3.3.2-7];
- a client's maximum packet size is never exceeded: such a delivery is not sent at all
  (5.0 section 3.1.2.11.4), and the caller counts and logs it.

`lay_out` is called in the order the deliveries go into the connection's outbox, which
writes them in that order: the PUBLISH that sets an alias always precedes those using it.
"""

from __future__ import annotations

import time
from typing import Any

from ..codec.publish import PublishLayout, lay_out_publish, publish_qos0, publish_with_id
from .client_limits import ClientLimits
from .message import Message


class Delivery:
    """A QoS 1/2 PUBLISH to a client: what its outbox writes (the message is laid out only
    then, by `Message.wire`) and what the session keeps in flight until it is acknowledged,
    one object for both. Nothing the outbox reads changes once it is made: a resend is a new
    `Delivery`; `released` is the session's alone. It has no subscription identifiers and no
    bytes of its own: an `OwnDelivery` has (the class attributes below stand in for them)."""

    __slots__ = ("message", "qos", "retain", "dup", "packet_id", "released")
    sub_ids: tuple[int, ...] = ()
    data: bytes | None = None

    def __init__(self, message: Message, qos: int, retain: bool, dup: bool, packet_id: int,
                 released: bool = False) -> None:
        self.message = message
        self.qos = qos
        self.retain = retain
        self.dup = dup
        self.packet_id = packet_id
        self.released = released  # QoS 2: PUBREC received, PUBREL sent

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.message!r}, qos={self.qos}, "
                f"retain={self.retain}, dup={self.dup}, packet_id={self.packet_id}, "
                f"released={self.released}, sub_ids={self.sub_ids})")


class OwnDelivery(Delivery):
    """A Delivery with MQTT 5 subscription identifiers (kept for a resend), or bytes of its
    own (`data`: its per-delivery properties laid out by `lay_out`). A subclass, so
    that the plain MQTT 3.1.1 Delivery costs nothing more than it did."""

    __slots__ = ("sub_ids", "data")

    def __init__(self, message: Message, qos: int, retain: bool, dup: bool, packet_id: int,
                 released: bool, sub_ids: tuple[int, ...], data: bytes | None) -> None:
        super().__init__(message, qos, retain, dup, packet_id, released)
        self.sub_ids = sub_ids
        self.data = data


def delivery(message: Message, qos: int, retain: bool, dup: bool, packet_id: int,
             released: bool, sub_ids: tuple[int, ...]) -> Delivery:
    """A Delivery laid out from the message's shared bytes, keeping `sub_ids` if any."""
    if sub_ids:
        return OwnDelivery(message, qos, retain, dup, packet_id, released, sub_ids, None)
    return Delivery(message, qos, retain, dup, packet_id, released)


def new_flight(message: Message, qos: int, retain: bool, dup: bool, packet_id: int,
               sub_ids: tuple[int, ...], link: ClientLimits | None) -> Delivery | None:
    """The Delivery to put in flight to a client (`link`: its MQTT 5 limits, None for MQTT
    3.x), with bytes of its own when it needs them; None when it is larger than the client
    accepts."""
    if link is None or not needs_own_layout(message, sub_ids, link):
        return delivery(message, qos, retain, dup, packet_id, False, sub_ids)
    data = lay_out(message, qos, retain, dup, packet_id, sub_ids, link, time.time())
    if data is None:
        return None
    return OwnDelivery(message, qos, retain, dup, packet_id, False, sub_ids, data)


def needs_own_layout(message: Message, sub_ids: tuple[int, ...], link: ClientLimits) -> bool:
    """True when this delivery's bytes are not the message's shared ones, or must be
    measured against the client's maximum packet size before they go."""
    return bool(sub_ids or message.expires_at or link.topic_alias_maximum
                or link.maximum_packet_size)


def lay_out(message: Message, qos: int, retain: bool, dup: bool, packet_id: int,
            sub_ids: tuple[int, ...], link: ClientLimits, now: float) -> bytes | None:
    """The PUBLISH bytes of one delivery to an MQTT 5 client, or None when they exceed its
    maximum packet size (then no alias is taken either)."""
    topic = message.topic
    alias, known = _alias_for(link, topic)
    if not (sub_ids or alias):
        if message.expires_at:
            layout = message.expiring_layout(message.remaining(now))
            data = _assemble(layout, message.payload, qos, retain, dup, packet_id)
        else:
            data = message.wire(qos, retain, dup, packet_id, 5)
    else:
        properties: dict[str, Any] = dict(message.properties)
        if message.expires_at:
            properties["message_expiry_interval"] = message.remaining(now)
        if sub_ids:
            properties["subscription_identifier"] = list(sub_ids)  # all [MQTT-3.3.4-4]
        if alias:
            properties["topic_alias"] = alias
        layout = lay_out_publish("" if known else topic, message.payload, 5, properties)
        data = _assemble(layout, message.payload, qos, retain, dup, packet_id)
    maximum = link.maximum_packet_size
    if maximum and len(data) > maximum:
        return None
    if alias and not known:
        aliases = link.outbound_aliases
        if aliases is None:
            aliases = link.outbound_aliases = {}
        aliases[topic] = alias
    return data


def _alias_for(link: ClientLimits, topic: str) -> tuple[int, bool]:
    """(alias, whether the client knows it already); alias 0: none."""
    maximum = link.topic_alias_maximum
    if not maximum:
        return 0, False
    # Per connection: `link` is the connection's, a reconnect has a new one [MQTT-3.3.2-7]
    aliases = link.outbound_aliases
    if aliases is None:
        return 1, False
    alias = aliases.get(topic)
    if alias is not None:
        return alias, True
    if len(aliases) < maximum:  # never above the client's maximum [MQTT-3.3.2-11]
        return len(aliases) + 1, False
    return 0, False


def _assemble(layout: PublishLayout, payload: bytes, qos: int, retain: bool, dup: bool,
              packet_id: int) -> bytes:
    if qos:
        return publish_with_id(layout, payload, qos, retain, dup, packet_id)
    return publish_qos0(layout, payload, retain)

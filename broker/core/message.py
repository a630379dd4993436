"""`Message`: an application message as the broker keeps it, apart from any one packet.

A PUBLISH packet is one hop of a message; the message itself is what the router fans out and
what sessions queue. It is immutable in meaning; the only mutable parts are caches: the wire
forms shared by every subscriber it is sent to (so a message fanned out to 100 subscribers is
laid out once), and whether the store already holds it. What the bytes are is the codec's
business (codec/publish.py); which of them a message keeps, and for how long, is this one's.

An MQTT 5 message expiry interval makes a message mortal: `expires_at` is its wall-clock end
(arrival + interval), and its arrival (`received_at`) is kept in the store so the end survives
a restart (a message stored without it counts from when it was loaded). An interval of 0 is
taken as no expiry, as Mosquitto does.

Every delivery pays for what a message is built with, and every queued message holds it, so
the less used wire caches share one slot, made on first use (`_Forms`); the ones a fan-out
reads per delivery (the QoS 0 PUBLISH with retain 0 at each level, and the head of a QoS 1/2
one as received) have their own, so forwarding a message as received makes no object at
all. A message queued for an offline session lets go of them all (`shed`): the session may
come back much later, and laying it out again then is cheap.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from ..codec.primitives import encode_utf8
from ..codec.properties import NO_PROPERTIES, encode_properties
from ..codec.publish import (
    PublishLayout,
    lay_out_publish,
    publish_qos0,
    publish_with_id,
    splice_publish,
    splice_publish_v5,
)
from ..store.base import SessionStore
from ..store.records import MessageQueued, MessageStored, OutgoingStored

_NO_PROPERTY_FIELD = encode_properties(NO_PROPERTIES, "PUBLISH")  # a property length of 0


class _Forms:
    """A message's less used wire forms, each made when first needed: the MQTT 3.x layout
    and QoS 0 PUBLISH with retain 1; the MQTT 5 layout with the message's own properties,
    QoS 0 PUBLISH with retain 1, and the layout carrying a remaining expiry, kept for that
    second. One object, made on first use and let go when the message is only queued
    (`shed`)."""

    __slots__ = ("layout", "qos0_retained", "layout_v5", "qos0_retained_v5", "expiring")

    def __init__(self) -> None:
        self.layout: PublishLayout | None = None
        self.qos0_retained: bytes | None = None
        self.layout_v5: PublishLayout | None = None
        self.qos0_retained_v5: bytes | None = None
        self.expiring: tuple[int, PublishLayout] | None = None


class Message:
    __slots__ = ("topic", "payload", "qos", "retain", "properties", "origin", "msg_id",
                 "stored", "expires_at", "_qos0", "_qos0_v5", "_acked_head", "_received_v5",
                 "_forms")

    def __init__(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                 properties: Mapping[str, Any] = NO_PROPERTIES, origin: str = "",
                 msg_id: int = 0, received_at: float = 0.0) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.properties = properties
        self.origin = origin  # client id of the publisher ("" for the broker itself)
        self.msg_id = msg_id  # identity in the store; 0 until the store needs it
        self.stored = False  # True once a MessageStored (or MessageQueued) was appended
        self.expires_at = 0.0  # wall clock; 0: never (5.0 section 3.3.2.3.3)
        if properties is not NO_PROPERTIES:
            interval = properties.get("message_expiry_interval")
            if interval:
                self.expires_at = (received_at or time.time()) + interval
        # Wire forms the codec made, kept for the next delivery (codec/publish.py says what
        # each is): the ones a fan-out reads per delivery in slots of their own (no object
        # made per message on the hot paths), the rest in one object made on first use.
        self._qos0: bytes | None = None  # the MQTT 3.x QoS 0 PUBLISH, retain 0
        self._qos0_v5: bytes | None = None  # the MQTT 5 QoS 0 PUBLISH, retain 0
        self._acked_head: bytes | None = None  # of an MQTT 3.x QoS 1/2 one, as received
        # What the decoder kept of the MQTT 5 PUBLISH it arrived in, if it is not the QoS 0
        # one with retain 0: a QoS 0 one with retain 1, or the head of its QoS 1/2 deliveries.
        self._received_v5: bytes | None = None
        self._forms: _Forms | None = None

    @property
    def received_at(self) -> float:
        """Wall-clock arrival of a message that expires (0.0 for one that does not)."""
        if not self.expires_at:
            return 0.0
        interval: int = self.properties["message_expiry_interval"]
        return self.expires_at - interval

    def forward_as_received(self, forwardable: bytes, v5: bool = False) -> None:
        """Reuse what the decoder kept of the PUBLISH this message arrived in
        (`Publish.forwardable`) for the deliveries at its level (`v5`: an MQTT 5 one, which
        had property length 0, so this message has no properties): a QoS 0 one is a QoS 0
        delivery as it is, so forwarding costs no encoding at all; a QoS 1/2 one is every
        QoS 1/2 delivery but its header byte and packet id. What an MQTT 5 delivery adds of
        its own (core/delivery.py) never comes from here."""
        if not (self.qos or self.retain):
            if v5:
                self._qos0_v5 = forwardable
            else:
                self._qos0 = forwardable
            return
        if v5:
            self._received_v5 = forwardable  # which of the two: by the message's QoS
        elif self.qos:
            self._acked_head = forwardable
        else:  # existing subscribers get retain 0 [MQTT-3.3.1-9]
            self._forms_made().qos0_retained = forwardable

    def shed(self) -> None:
        """Let go of the wire forms: the message is queued, and until a delivery makes them
        again they are bytes held for nothing (about 100 B of a 64-B message's ~250)."""
        self._qos0 = self._qos0_v5 = self._acked_head = self._received_v5 = self._forms = None

    def __repr__(self) -> str:
        return (f"Message({self.topic!r}, {len(self.payload)} bytes, qos={self.qos}, "
                f"retain={self.retain})")

    def _forms_made(self) -> _Forms:
        forms = self._forms
        if forms is None:
            forms = self._forms = _Forms()
        return forms

    def _layout_v5(self) -> PublishLayout:
        forms = self._forms_made()
        layout = forms.layout_v5
        if layout is None:
            if self.properties is NO_PROPERTIES:
                # What every 3.x publisher and most 5.0 ones send: the topic of the 3.x
                # layout, if there is one, and a property length of 0.
                layout3 = forms.layout
                topic_part = layout3[0] if layout3 is not None else encode_utf8(self.topic)
                layout = (topic_part, _NO_PROPERTY_FIELD,
                          len(topic_part) + 1 + len(self.payload), True)
            else:
                layout = lay_out_publish(self.topic, self.payload, 5, self.properties)
            forms.layout_v5 = layout
        return layout

    def _laid_out(self, v5: bool) -> PublishLayout:
        """The layout at one level, kept per level: a message fanned out to both 3.1.1 and 5
        subscribers is laid out once for each, not once per switch between them."""
        if v5:
            return self._layout_v5()
        forms = self._forms_made()
        layout = forms.layout
        if layout is None:
            layout = forms.layout = lay_out_publish(self.topic, self.payload, 4)
        return layout

    def remaining(self, now: float) -> int:
        """Whole seconds of life left, rounded up, never below 0: the message expiry interval
        a delivery made at `now` carries [MQTT-3.3.2-6]."""
        left = self.expires_at - now
        return math.ceil(left) if left > 0 else 0  # time left, not given [MQTT-3.3.2-6]

    def expiring_layout(self, remaining: int) -> PublishLayout:
        """The MQTT 5 layout carrying `remaining` as its message expiry interval; the last one
        is kept, so a fan-out within one second lays the message out once."""
        forms = self._forms_made()
        cached = forms.expiring
        if cached is not None and cached[0] == remaining:
            return cached[1]
        properties = dict(self.properties)
        properties["message_expiry_interval"] = remaining
        layout = lay_out_publish(self.topic, self.payload, 5, properties)
        forms.expiring = (remaining, layout)
        return layout

    def qos0(self, retain: bool, protocol_level: int) -> bytes:
        """The QoS 0 PUBLISH bytes, laid out once per message and level whatever the number
        of subscribers."""
        if not retain:  # (existing subscribers of a retained one get retain 0 [MQTT-3.3.1-9])
            if protocol_level < 5:
                data = self._qos0
                if data is None:
                    data = self._qos0 = publish_qos0(self._laid_out(False), self.payload, False)
                return data
            data = self._qos0_v5
            if data is None:
                data = self._qos0_v5 = publish_qos0(self._layout_v5(), self.payload, False)
            return data
        forms = self._forms_made()
        if protocol_level < 5:
            data = forms.qos0_retained
            if data is None:
                data = forms.qos0_retained = publish_qos0(self._laid_out(False), self.payload,
                                                          True)
            return data
        data = self._received_v5
        if data is not None and not self.qos:
            return data
        data = forms.qos0_retained_v5
        if data is None:
            data = forms.qos0_retained_v5 = publish_qos0(self._layout_v5(), self.payload, True)
        return data

    def wire(self, qos: int, retain: bool, dup: bool, packet_id: int, protocol_level: int) -> bytes:
        """The PUBLISH bytes for one delivery of this message, with its own properties only
        (what differs per MQTT 5 delivery is core/delivery.py's)."""
        if not qos:
            return self.qos0(retain, protocol_level)
        if protocol_level < 5:
            head = self._acked_head
            if head is not None:
                return splice_publish(head, self.payload, qos, retain, dup, packet_id)
            return publish_with_id(self._laid_out(False), self.payload, qos, retain, dup,
                                   packet_id)
        head = self._received_v5
        if head is not None and self.qos:
            return splice_publish_v5(head, self.payload, qos, retain, dup, packet_id)
        return publish_with_id(self._layout_v5(), self.payload, qos, retain, dup, packet_id)

    def store_owed(self, store: SessionStore, client_id: str, qos: int, retain: bool,
                   packet_id: int, sub_ids: tuple[int, ...] = ()) -> None:
        """Record that `client_id` is owed this message (`packet_id` 0: queued): the first
        time together with the message itself, in one record, then by reference."""
        if self.stored:
            if not store.self_contained:
                store.append(OutgoingStored(client_id, self.msg_id, qos, retain, packet_id,
                                            sub_ids))
                return
        else:
            self.msg_id = store.new_message_id()
        store.append(MessageQueued(self.msg_id, self.topic, self.payload, self.qos,
                                   self.retain, self.origin, self.properties, client_id, qos,
                                   retain, packet_id, self.received_at, sub_ids))
        self.stored = True

    def record(self) -> MessageStored:
        """This message as the store keeps it."""
        return MessageStored(self.msg_id, self.topic, self.payload, self.qos, self.retain,
                             self.origin, self.properties, self.received_at)

    def ensure_stored(self, store: SessionStore) -> None:
        """Write this message to the store once, however many sessions or topics refer to it."""
        if not self.stored:
            self.msg_id = store.new_message_id()
            store.append(self.record())
            self.stored = True

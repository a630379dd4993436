"""`Message`: an application message as the broker keeps it, apart from any one packet.

A PUBLISH packet is one hop of a message; the message itself is what the router fans out and
what sessions queue. It is immutable in meaning; the only mutable parts are caches: the wire
forms shared by every subscriber it is sent to (so a message fanned out to 100 subscribers is
laid out once), and whether the store already holds it. What the bytes are is the codec's
business (codec/publish.py); which of them a message keeps, and for how long, is this one's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..codec.properties import NO_PROPERTIES
from ..codec.publish import (
    PublishLayout,
    lay_out_publish,
    publish_qos0,
    publish_with_id,
    splice_publish,
)
from ..store.base import SessionStore
from ..store.records import MessageQueued, MessageStored, OutgoingStored


class Message:
    __slots__ = ("topic", "payload", "qos", "retain", "properties", "origin", "msg_id",
                 "stored", "_acked_head", "_layout", "_qos0", "_qos0_retained")

    def __init__(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                 properties: Mapping[str, Any] = NO_PROPERTIES, origin: str = "",
                 msg_id: int = 0) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.properties = properties
        self.origin = origin  # client id of the publisher ("" for the broker itself)
        self.msg_id = msg_id  # identity in the store; 0 until the store needs it
        self.stored = False  # True once a MessageStored (or MessageQueued) was appended
        # Wire forms the codec made, kept for the next delivery (codec/publish.py says what
        # each is).
        self._layout: PublishLayout | None = None
        self._qos0: bytes | None = None  # the MQTT 3.x QoS 0 PUBLISH, retain 0
        self._qos0_retained: bytes | None = None  # the same with retain 1
        self._acked_head: bytes | None = None  # of an MQTT 3.x QoS 1/2 one, as received

    def forward_as_received(self, forwardable: bytes) -> None:
        """Reuse what the decoder kept of the MQTT 3.x PUBLISH this message arrived in
        (`Publish.forwardable`): a QoS 0 one is a QoS 0 delivery as it is, so forwarding costs
        no encoding at all; a QoS 1/2 one is every QoS 1/2 delivery but its header byte and
        packet id."""
        if self.qos:
            self._acked_head = forwardable
        elif self.retain:
            self._qos0_retained = forwardable  # existing subscribers get retain 0 [MQTT-3.3.1-9]
        else:
            self._qos0 = forwardable

    def __repr__(self) -> str:
        return (f"Message({self.topic!r}, {len(self.payload)} bytes, qos={self.qos}, "
                f"retain={self.retain})")

    def _laid_out(self, v5: bool) -> PublishLayout:
        layout = self._layout
        if layout is None or layout[3] != v5:
            layout = self._layout = lay_out_publish(self.topic, self.payload, 5 if v5 else 4,
                                                    self.properties)
        return layout

    def qos0(self, retain: bool, protocol_level: int) -> bytes:
        """The QoS 0 PUBLISH bytes, laid out once per message (MQTT 3.x) whatever the number of
        subscribers."""
        if protocol_level < 5:
            data = self._qos0_retained if retain else self._qos0
            if data is None:
                data = publish_qos0(self._laid_out(False), self.payload, retain)
                if retain:
                    self._qos0_retained = data
                else:
                    self._qos0 = data
            return data
        return publish_qos0(self._laid_out(True), self.payload, retain)

    def wire(self, qos: int, retain: bool, dup: bool, packet_id: int, protocol_level: int) -> bytes:
        """The PUBLISH bytes for one delivery of this message."""
        if not qos:
            return self.qos0(retain, protocol_level)
        head = self._acked_head
        if head is not None and protocol_level < 5:
            return splice_publish(head, self.payload, qos, retain, dup, packet_id)
        return publish_with_id(self._laid_out(protocol_level >= 5), self.payload, qos, retain,
                               dup, packet_id)

    def store_owed(self, store: SessionStore, client_id: str, qos: int, retain: bool,
                   packet_id: int) -> None:
        """Record that `client_id` is owed this message (`packet_id` 0: queued): the first
        time together with the message itself, in one record, then by reference."""
        if self.stored:
            store.append(OutgoingStored(client_id, self.msg_id, qos, retain, packet_id))
            return
        self.msg_id = store.new_message_id()
        store.append(MessageQueued(self.msg_id, self.topic, self.payload, self.qos,
                                   self.retain, self.origin, self.properties, client_id, qos,
                                   retain, packet_id))
        self.stored = True

    def ensure_stored(self, store: SessionStore) -> None:
        """Write this message to the store once, however many sessions or topics refer to it."""
        if not self.stored:
            self.msg_id = store.new_message_id()
            store.append(MessageStored(self.msg_id, self.topic, self.payload, self.qos,
                                       self.retain, self.origin, self.properties))
            self.stored = True

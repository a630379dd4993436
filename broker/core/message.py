"""`Message`: an application message as the broker keeps it, apart from any one packet.

A PUBLISH packet is one hop of a message; the message itself is what the router fans out and
what sessions queue. It is immutable in meaning; the only mutable parts are caches: the wire
layout shared by every subscriber it is sent to (so a message fanned out to 100 subscribers is
laid out once), and whether the store already holds it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..codec.primitives import encode_varint
from ..codec.properties import NO_PROPERTIES
from ..codec.publish import encode_publish_parts, publish_first_byte
from ..store.base import SessionStore
from ..store.records import MessageQueued, MessageStored, OutgoingStored

# PUBLISH header bytes by [qos][retain][dup], for QoS 1 and 2.
_FIRST_BYTES = [[[bytes((publish_first_byte(qos, retain, dup),)) for dup in (False, True)]
                 for retain in (False, True)] for qos in range(3)]


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
        self._layout: tuple[bytes, bytes, int, bool] | None = None
        self._qos0: bytes | None = None  # the MQTT 3.x QoS 0 PUBLISH, retain 0
        self._qos0_retained: bytes | None = None  # the same with retain 1
        # MQTT 3.x QoS 1/2: the remaining length and topic, between header byte and packet id
        self._acked_head: bytes | None = None

    def forward_as_received(self, raw: bytes) -> None:
        """Reuse `raw`, the MQTT 3.x PUBLISH this message arrived in. A QoS 0 one is the QoS 0
        wire form itself (forwarding costs no encoding at all; deliveries to existing
        subscribers carry retain 0, so a retained original serves the retained form only).
        A QoS 1/2 one gives every QoS 1/2 delivery all but its header byte and packet id."""
        flags = raw[0]
        if flags & 0x06:
            self._acked_head = raw[1:len(raw) - len(self.payload) - 2]
        elif flags & 0x01:
            self._qos0_retained = raw
        else:
            self._qos0 = raw

    def __repr__(self) -> str:
        return (f"Message({self.topic!r}, {len(self.payload)} bytes, qos={self.qos}, "
                f"retain={self.retain})")

    def _parts(self, v5: bool) -> tuple[bytes, bytes, int]:
        layout = self._layout
        if layout is None or layout[3] != v5:
            topic_part, props_part, length = encode_publish_parts(
                self.topic, self.payload, 5 if v5 else 4, self.properties)
            layout = self._layout = (topic_part, props_part, length, v5)
        return layout[0], layout[1], layout[2]

    def qos0(self, retain: bool, protocol_level: int) -> bytes:
        """The QoS 0 PUBLISH bytes, laid out once per message (MQTT 3.x) whatever the number of
        subscribers."""
        if protocol_level < 5:
            data = self._qos0_retained if retain else self._qos0
            if data is None:
                data = self._encode_qos0(retain, False)
                if retain:
                    self._qos0_retained = data
                else:
                    self._qos0 = data
            return data
        return self._encode_qos0(retain, True)

    def _encode_qos0(self, retain: bool, v5: bool) -> bytes:
        topic_part, props_part, length = self._parts(v5)
        return (bytes((publish_first_byte(0, retain, False),)) + encode_varint(length)
                + topic_part + props_part + self.payload)

    def wire(self, qos: int, retain: bool, dup: bool, packet_id: int, protocol_level: int) -> bytes:
        """The PUBLISH bytes for one delivery of this message."""
        if not qos:
            return self.qos0(retain, protocol_level)
        head = self._acked_head
        if head is not None and protocol_level < 5:
            return b"".join((_FIRST_BYTES[qos][retain][dup], head,
                             packet_id.to_bytes(2, "big"), self.payload))
        v5 = protocol_level >= 5
        topic_part, props_part, length = self._parts(v5)
        return b"".join((bytes((publish_first_byte(qos, retain, dup),)), encode_varint(length + 2),
                         topic_part, packet_id.to_bytes(2, "big"), props_part, self.payload))

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

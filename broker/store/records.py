"""The facts the session store keeps, one slotted dataclass each.

The store is a log of these facts; `base.restore()` folds them back into state. A message
fanned out to many sessions is one `MessageStored` referenced by id from each
`OutgoingStored`, never copied per session; the first session a message is owed to writes
both facts as one `MessageQueued`. Clean sessions with no expiry write nothing.

Records are built on the hot path (two per QoS 1 message for a persistent session: a
`MessageQueued` and, once acknowledged, an `OutgoingDone`), so they
are plain slotted dataclasses rather than frozen ones, which cost several times as much to
construct; nothing ever changes one after it is made.

Outgoing messages of a session are keyed by message id while queued and by packet id once
in flight; `OutgoingSent` moves a queued one into flight, `OutgoingReleased` records that its
PUBREC arrived (QoS 2, PUBREL sent), and `OutgoingDone` ends it; `OutgoingWithdrawn` ends a
queued one that was never sent.

MQTT 5 added two facts to old records, each with a default that means "as before", so a
record without them is written and read exactly as it always was: a message's wall-clock
arrival time (`received_at`, set only when it has a message expiry interval, which counts
from then across restarts) and the subscription identifiers a delivery carries (`sub_ids`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..codec.properties import NO_PROPERTIES


@dataclass(slots=True)
class SessionOpened:
    """A persistent session exists (created, or resumed by a new connection)."""

    client_id: str
    protocol_level: int
    expiry: int  # seconds after disconnect; 0 = never expires


@dataclass(slots=True)
class SessionClosed:
    """Its connection ended at wall-clock time `at`; expiry counts from here."""

    client_id: str
    at: float


@dataclass(slots=True)
class SessionDeleted:
    client_id: str


@dataclass(slots=True)
class Subscribed:
    client_id: str
    topic_filter: str
    options: int  # the SUBSCRIBE options byte
    subscription_id: int = 0  # MQTT 5's subscription identifier; 0: none


@dataclass(slots=True)
class Unsubscribed:
    client_id: str
    topic_filter: str


@dataclass(slots=True)
class MessageStored:
    msg_id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    origin: str = ""
    properties: Mapping[str, Any] = NO_PROPERTIES
    received_at: float = 0.0  # wall clock, for a message expiry interval; 0: not kept


@dataclass(slots=True)
class OutgoingStored:
    """Message `msg_id` is owed to `client_id` at `qos`; `packet_id` 0 means still queued."""

    client_id: str
    msg_id: int
    qos: int
    retain: bool
    packet_id: int
    sub_ids: tuple[int, ...] = ()  # MQTT 5 subscription identifiers this delivery carries


@dataclass(slots=True)
class MessageQueued:
    """`MessageStored` and its first `OutgoingStored` in one record (one frame instead of two
    for the common case: a message owed to one persistent session)."""

    msg_id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    origin: str
    properties: Mapping[str, Any]
    client_id: str
    out_qos: int
    out_retain: bool
    packet_id: int
    received_at: float = 0.0
    sub_ids: tuple[int, ...] = ()

    def message(self) -> MessageStored:
        return MessageStored(self.msg_id, self.topic, self.payload, self.qos, self.retain,
                             self.origin, self.properties, self.received_at)

    def outgoing(self) -> OutgoingStored:
        return OutgoingStored(self.client_id, self.msg_id, self.out_qos, self.out_retain,
                              self.packet_id, self.sub_ids)


@dataclass(slots=True)
class OutgoingSent:
    """The oldest queued entry for `msg_id` went into flight with `packet_id`."""

    client_id: str
    msg_id: int
    packet_id: int


@dataclass(slots=True)
class OutgoingWithdrawn:
    """The oldest queued entry for `msg_id` is no longer owed to `client_id`: a shared group
    took it back for another member (5.0 section 4.8.2)."""

    client_id: str
    msg_id: int


@dataclass(slots=True)
class OutgoingReleased:
    """PUBREC arrived for in-flight `packet_id`; PUBREL is owed until PUBCOMP."""

    client_id: str
    packet_id: int


@dataclass(slots=True)
class OutgoingDone:
    client_id: str
    packet_id: int


@dataclass(slots=True)
class IncomingQos2:
    """An inbound QoS 2 packet id was delivered onward; a resend must not be forwarded again."""

    client_id: str
    packet_id: int


@dataclass(slots=True)
class IncomingReleased:
    client_id: str
    packet_id: int


@dataclass(slots=True)
class RetainedSet:
    topic: str
    msg_id: int


@dataclass(slots=True)
class RetainedCleared:
    topic: str


Record = (SessionOpened | SessionClosed | SessionDeleted | Subscribed | Unsubscribed
          | MessageStored | OutgoingStored | OutgoingSent | OutgoingReleased | OutgoingDone
          | IncomingQos2 | IncomingReleased | RetainedSet | RetainedCleared | MessageQueued
          | OutgoingWithdrawn)

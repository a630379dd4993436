"""`Session`: what a client id owns beyond one connection.

Subscriptions, the outgoing in-flight window (packet id -> message, in send order), the queue
of QoS 1/2 messages beyond the window, inbound QoS 2 packet ids awaiting PUBREL, and packet id
allocation. A persistent session (clean session 0) writes every change ahead to the store;
a clean one writes nothing.

Delivery rules:
- QoS 0 goes straight to the connected peer's outbox; when the outbox is full it is dropped
  (counted, logged); to an offline session it is not queued (as Mosquitto's default).
- QoS 1/2 goes in flight while the window (`max_inflight_messages`) has room and nothing is
  queued ahead of it; otherwise it is queued, and past `max_queued_messages` /
  `max_queued_bytes` the new message is dropped (counted, logged). Never silently.
- On reconnect every in-flight message is resent with DUP=1 in order, and PUBREL is resent
  for QoS 2 messages whose PUBREC arrived [MQTT-4.4.0-1]; then the window is refilled.

MQTT 5 (the connection's `ClientLimits`, given to `attach`):
- The window is the smaller of `max_inflight_messages` and the client's receive maximum
  [MQTT-3.3.4-9]. In-flight messages beyond it at a reconnect wait (`_held`) and are resent
  as acknowledgements make room, before anything queued.
- A message whose expiry interval has passed is not sent: not delivered when it arrives
  (a retained one), dropped from the queue when its turn comes and when restored from the
  store [MQTT-3.3.2-5]. One already sent is sent again after a reconnect (its delivery has
  started), saying 0 seconds left once expired. Counted in `publish_expired`.
- A delivery larger than the client's maximum packet size is not sent and counts as done:
  no packet id is used, or the one it had is given back [MQTT-3.1.2-25]. Counted and logged
  as a drop.
- Each delivery carries the subscription identifiers it matched; they are kept with it in
  the queue, in flight and in the store, so a resend carries them too. The bytes are
  core/delivery.py's; a delivery with no bytes of its own takes the message's shared ones.

The peer is duck-typed (`Peer` below) so this module stays free of sockets. Nothing here
yields (no I/O, no wait: records go to the store's buffer, packets to the peer's outbox), so
a session's state changes atomically between greenlet switches, and it keeps no lock of its
own. A gevent `Semaphore` per session (184 bytes of every idle connection) was taken and
released on every delivery for nothing: the whole suite, run with a greenlet switch tracer
that flagged any switch while one was held, found none. A change that makes a method here
yield must bring the exclusion back.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..auth.acl import Rules
from ..codec import PubRel, SubOptions
from ..config.schema import LimitsSection
from ..store.base import SessionStore
from ..store.records import (
    IncomingQos2,
    IncomingReleased,
    OutgoingDone,
    OutgoingReleased,
    OutgoingSent,
    OutgoingWithdrawn,
    SessionClosed,
    SessionDeleted,
    SessionOpened,
    Subscribed,
    Unsubscribed,
)
from .ack_rules import check_ack
from .client_limits import ClientLimits
from .delivery import Delivery, OwnDelivery, delivery, lay_out, new_flight
from .drop_log import DropLog
from .message import Message
from .peer import Peer, WaitDurable
from .stats import Stats

__all__ = ["Peer", "QueueEntry", "Queued", "Session", "SessionEnv", "WaitDurable", "queued_entry"]


@dataclass(slots=True)
class SessionEnv:
    """What every session shares; `limits` is replaced on reload."""

    store: SessionStore
    stats: Stats
    limits: LimitsSection
    drops: DropLog


# A queued message: the message, the QoS and retain flag it goes with, and the MQTT 5
# subscription identifiers it carries.
Queued = tuple[Message, int, bool, tuple[int, ...]]
# What a queue holds: the message alone when it goes at its own QoS, retain 0 and with no
# subscription identifiers (what nearly every queued message is: a 72-byte tuple saved per
# message), else its `Queued` tuple. `queued_entry` reads either.
QueueEntry = Message | Queued


def queue_entry(message: Message, qos: int, retain: bool, sub_ids: tuple[int, ...]) -> QueueEntry:
    if qos == message.qos and not retain and not sub_ids:
        return message
    return (message, qos, retain, sub_ids)


def queued_entry(entry: QueueEntry) -> Queued:
    """A queue entry as (message, QoS, retain, subscription ids)."""
    if type(entry) is tuple:
        return entry
    message: Message = entry  # type: ignore[assignment]
    return (message, message.qos, False, ())

# Shared, read-only stand-ins for containers a session has not needed yet: most sessions
# never queue, never see QoS 2, many never subscribe, and an empty deque alone is 760 bytes.
# Each is replaced by a real container on the first write (`_owned`).
_NO_ENTRIES: Mapping[Any, Any] = MappingProxyType({})
_NO_QUEUE: Sequence[Any] = ()
_NO_IDS: frozenset[int] = frozenset()


class Session:
    __slots__ = ("env", "client_id", "persistent", "protocol_level", "expiry",
                 "disconnected_at", "subscriptions", "subscription_ids", "inflight", "queue",
                 "queued_bytes", "incoming_qos2", "peer", "link", "rules", "_held",
                 "_next_packet_id")

    def __init__(self, env: SessionEnv, client_id: str, persistent: bool,
                 protocol_level: int = 4, expiry: int = 0) -> None:
        self.env = env
        self.client_id = client_id
        self.persistent = persistent
        self.protocol_level = protocol_level
        self.expiry = expiry
        self.disconnected_at: float | None = None
        # Typed as the containers that replace the read-only stand-ins on the first write
        # (`_owned_*`), which is why these five assignments are ignored.
        self.subscriptions: dict[str, SubOptions] = _NO_ENTRIES  # type: ignore[assignment]
        # MQTT 5 subscription identifiers, of the filters that have one.
        self.subscription_ids: dict[str, int] = _NO_ENTRIES  # type: ignore[assignment]
        self.inflight: dict[int, Delivery] = _NO_ENTRIES  # type: ignore[assignment]
        self.queue: deque[QueueEntry] = _NO_QUEUE  # type: ignore[assignment]
        self.queued_bytes = 0
        self.incoming_qos2: set[int] = _NO_IDS  # type: ignore[assignment]
        self.peer: Peer | None = None
        # What the MQTT 5 client of the attached connection asked for; None: MQTT 3.x
        self.link: ClientLimits | None = None
        # In flight but not resent yet on this connection: packet ids beyond the window
        self._held: deque[int] = _NO_QUEUE  # type: ignore[assignment]
        self.rules: Rules | None = None  # ACL rules of its latest connection; None: no ACL
        self._next_packet_id = 1

    def __repr__(self) -> str:
        return (f"Session({self.client_id!r}, persistent={self.persistent}, "
                f"inflight={len(self.inflight)}, queued={len(self.queue)})")

    def _owned_inflight(self) -> dict[int, Delivery]:
        if self.inflight is _NO_ENTRIES:
            self.inflight = {}
        return self.inflight

    def _owned_queue(self) -> deque[QueueEntry]:
        if self.queue is _NO_QUEUE:
            self.queue = deque()
        return self.queue

    # -- restore -----------------------------------------------------------------------------

    def restore_owed(self, message: Message, qos: int, retain: bool, packet_id: int,
                     released: bool, sub_ids: tuple[int, ...] = ()) -> None:
        """From the store: one message owed, in flight under `packet_id` or (0) queued."""
        if packet_id:
            self._owned_inflight()[packet_id] = delivery(message, qos, retain, False,
                                                          packet_id, released, sub_ids)
            self._next_packet_id = packet_id % 65_535 + 1
        elif message.expires_at and self._expired(message):
            pass  # while the broker was down: the store forgets it at its next compaction
        else:
            self._owned_queue().append(queue_entry(message, qos, retain, sub_ids))
            self.queued_bytes += len(message.payload)

    def accept_owed(self, message: Message, qos: int, retain: bool,
                    sub_ids: tuple[int, ...] = ()) -> None:
        """A message another node put in this session's queue in the store (a cluster):
        queued here as if restored, and sent when the window has room."""
        self.restore_owed(message, qos, retain, 0, False, sub_ids)
        self._fill_window()

    def restore_incoming(self, packet_ids: set[int]) -> None:
        if packet_ids:
            self.incoming_qos2 = set(packet_ids)

    # -- store -------------------------------------------------------------------------------

    def _write(self, record: Any) -> None:
        if self.persistent:
            self.env.store.append(record)

    def opened(self) -> None:
        """Record that a connection opened (or resumed) this session."""
        self.disconnected_at = None
        self._write(SessionOpened(self.client_id, self.protocol_level, self.expiry))

    # -- connection life ---------------------------------------------------------------------

    def attach(self, peer: Peer, link: ClientLimits | None = None) -> None:
        """A connection took over this session: resend what is owed, then refill the window.
        `link`: what the connection's MQTT 5 client asked for (the defaults if not given)."""
        self.peer = peer
        # None exactly for an MQTT 3.x peer: deliveries test this, not the level
        if peer.protocol_level >= 5:
            self.link = link if link is not None else ClientLimits()
        else:
            self.link = None
        self._held = _NO_QUEUE  # type: ignore[assignment]
        window = self._window()
        # What is owed goes again, in order: PUBLISH with DUP, or PUBREL [MQTT-4.4.0-1];
        # a PUBLISH beyond the window waits for room [MQTT-3.3.4-9].
        unacknowledged = 0
        for packet_id, flight in list(self.inflight.items()):
            if flight.released:
                peer.put(PubRel(packet_id))
                unacknowledged += 1  # until PUBCOMP (5.0 section 4.9)
            elif window and unacknowledged >= window:
                if self._held is _NO_QUEUE:
                    self._held = deque()
                self._held.append(packet_id)
            elif self._resend(packet_id, flight, peer):
                unacknowledged += 1
        self._fill_window()

    def _resend(self, packet_id: int, old: Delivery, peer: Peer) -> bool:
        """Send in-flight `old` again as a new Delivery (the old one may still sit in the old
        connection's outbox); False if it is too large for this client, and so done."""
        again = new_flight(old.message, old.qos, old.retain, True, packet_id, old.sub_ids,
                           self.link)
        if again is None:
            del self.inflight[packet_id]
            self._write(OutgoingDone(self.client_id, packet_id))
            self._drop(old.message, self._too_large())
            return False
        self.inflight[packet_id] = again
        peer.put(again)
        return True

    def detach(self, peer: Peer) -> bool:
        """The connection `peer` ended; False if another connection already owns the session."""
        if self.peer is not peer:
            return False
        self.peer = None
        self.link = None
        self._held = _NO_QUEUE  # type: ignore[assignment]
        self.disconnected_at = time.time()
        self._write(SessionClosed(self.client_id, self.disconnected_at))
        return True

    # -- subscriptions -----------------------------------------------------------------------

    def add_subscription(self, topic_filter: str, options: SubOptions,
                         identifier: int = 0) -> None:
        """Record a subscription (a new one, or one that replaces the same filter's), with
        its MQTT 5 subscription identifier (0: none)."""
        if self.subscriptions is _NO_ENTRIES:
            self.subscriptions = {}
        self.subscriptions[topic_filter] = options
        if identifier:
            if self.subscription_ids is _NO_ENTRIES:
                self.subscription_ids = {}
            self.subscription_ids[topic_filter] = identifier
        elif topic_filter in self.subscription_ids:
            del self.subscription_ids[topic_filter]
        self._write(Subscribed(self.client_id, topic_filter, options.to_byte(), identifier))

    def remove_subscription(self, topic_filter: str) -> bool:
        if topic_filter not in self.subscriptions:
            return False
        del self.subscriptions[topic_filter]
        if topic_filter in self.subscription_ids:
            del self.subscription_ids[topic_filter]
        self._write(Unsubscribed(self.client_id, topic_filter))
        return True

    def withdraw(self, wanted: Callable[[Message], bool],
                 in_flight: bool) -> list[tuple[Message, int]]:
        """Take back the deliveries of the messages `wanted` picks that the client has not
        acknowledged, as (message, QoS) in delivery order: every queued one, and with
        `in_flight` the QoS 1 ones sent (a QoS 2 one in flight stays). A shared group hands
        them to another member when this one leaves it (5.0 section 4.8.2)."""
        taken: list[tuple[Message, int]] = []
        if in_flight:
            for packet_id, flight in list(self.inflight.items()):
                # A QoS 2 one sent never goes to another client [MQTT-4.8.2-5]
                if flight.qos == 1 and wanted(flight.message):
                    del self.inflight[packet_id]
                    self._write(OutgoingDone(self.client_id, packet_id))
                    taken.append((flight.message, flight.qos))
        if self.queue:
            kept: deque[QueueEntry] = deque()
            for entry in self.queue:
                message, qos, _retain, _ids = queued_entry(entry)
                if wanted(message):
                    taken.append((message, qos))
                    self.queued_bytes -= len(message.payload)
                    self._write(OutgoingWithdrawn(self.client_id, message.msg_id))
                else:
                    kept.append(entry)
            self.queue = kept
        if taken and in_flight:
            self._fill_window()
        return taken

    # -- outgoing ----------------------------------------------------------------------------

    def deliver(self, message: Message, qos: int, retain: bool = False,
                sub_ids: tuple[int, ...] = ()) -> bool:
        """Send or queue one message at `qos` (already the minimum of publish and grant).
        `sub_ids`: the MQTT 5 subscription identifiers of the matching subscriptions, which
        this delivery carries [MQTT-3.3.4-4]. False when it was lost: dropped (counted,
        logged) or expired; True when it was sent or queued, and for QoS 0 to an offline
        client, which is owed nothing."""
        peer = self.peer
        if not qos:
            if peer is None:
                return True  # QoS 0 is not queued for an offline client: nothing lost
            if message.expires_at and self._expired(message):
                return False
            link = self.link
            data: bytes | None
            if link is None:  # MQTT 3.x
                data = message.qos0(retain, 4)
            elif (sub_ids or message.expires_at or link.topic_alias_maximum
                  or link.maximum_packet_size):  # needs_own_layout, inlined: the hot path
                data = lay_out(message, 0, retain, False, 0, sub_ids, link, time.time())
                if data is None:
                    self._drop(message, self._too_large())
                    return False
            else:
                data = message.qos0(retain, 5)
            if not peer.offer(data):  # bytes: the writer just sends them
                self._drop(message, "the client's outbox is full (it reads too slowly)")
                return False
            stats = self.env.stats
            stats.publish_sent += 1
            stats.publish_bytes_sent += len(message.payload)
            return True
        if message.expires_at and self._expired(message):
            return False
        # `_window` and `_flight`, inlined: this is the hot path
        link = self.link
        window = self.env.limits.max_inflight_messages
        if link is not None:
            receive = link.receive_maximum
            if not window or receive < window:
                window = receive
        if (peer is not None and not self.queue
                and (not window or len(self.inflight) < window)):
            packet_id = self._allocate_packet_id()
            if packet_id:
                flight: Delivery | None
                if link is not None and (sub_ids or message.expires_at
                                         or link.topic_alias_maximum
                                         or link.maximum_packet_size):
                    flight = new_flight(message, qos, retain, False, packet_id, sub_ids,
                                        link)
                    if flight is None:  # not stored, the packet id unused [MQTT-3.1.2-25]
                        self._drop(message, self._too_large())
                        return False
                elif sub_ids:
                    flight = OwnDelivery(message, qos, retain, False, packet_id, False,
                                         sub_ids, None)
                else:
                    flight = Delivery(message, qos, retain, False, packet_id)
                self._owned_inflight()[packet_id] = flight
                if self.persistent:
                    message.store_owed(self.env.store, self.client_id, qos, retain,
                                       packet_id, sub_ids)
                peer.put(flight)
                return True
        limits = self.env.limits
        size = len(message.payload)
        if limits.max_queued_messages and len(self.queue) >= limits.max_queued_messages:
            self._drop(message, f"max_queued_messages ({limits.max_queued_messages}) reached")
            return False
        if limits.max_queued_bytes and self.queued_bytes + size > limits.max_queued_bytes:
            self._drop(message, f"max_queued_bytes ({limits.max_queued_bytes}) reached")
            return False
        self._owned_queue().append(queue_entry(message, qos, retain, sub_ids))
        self.queued_bytes += size
        if peer is None:
            message.shed()  # a live delivery of the same fan-out lays it out again, once
        if self.persistent:
            message.store_owed(self.env.store, self.client_id, qos, retain, 0, sub_ids)
        return True

    def window_full(self) -> bool:
        """True when a QoS 1/2 delivery now would wait in the queue."""
        window = self._window()
        return bool(self.queue) or (bool(window) and len(self.inflight) >= window)

    def _window(self) -> int:
        """How many QoS 1/2 PUBLISHes may await acknowledgement (0: no limit):
        `max_inflight_messages`, lowered to an MQTT 5 client's receive maximum
        [MQTT-3.3.4-9]."""
        window = self.env.limits.max_inflight_messages
        link = self.link
        if link is not None:
            receive = link.receive_maximum
            if not window or receive < window:
                return receive
        return window

    def _expired(self, message: Message) -> bool:
        """True, counted and logged, if `message`'s expiry interval has passed: that copy is
        not sent [MQTT-3.3.2-5]."""
        if message.expires_at > time.time():
            return False
        self._drop(message, "its message expiry interval passed", expired=True)  # [MQTT-3.3.2-5]
        return True

    def _too_large(self) -> str:
        link = self.link
        maximum = link.maximum_packet_size if link is not None else 0
        return f"larger than the client's maximum packet size ({maximum} bytes) [MQTT-3.1.2-25]"

    def _allocate_packet_id(self) -> int:
        """A packet id not in flight, or 0 when all 65,535 are."""
        inflight = self.inflight
        if len(inflight) >= 65_535:
            return 0
        packet_id = self._next_packet_id
        while packet_id in inflight:
            packet_id = packet_id % 65_535 + 1
        self._next_packet_id = packet_id % 65_535 + 1
        return packet_id

    def _fill_window(self) -> None:
        peer = self.peer
        queue = self.queue
        held = self._held
        if peer is None or not (queue or held):
            return
        window = self._window()
        inflight = self.inflight
        link = self.link
        while held and (not window or len(inflight) - len(held) < window):
            packet_id = held.popleft()
            self._resend(packet_id, inflight[packet_id], peer)
        if held:
            return
        while queue and (not window or len(inflight) < window):
            packet_id = self._allocate_packet_id()
            if not packet_id:
                return
            message, qos, retain, sub_ids = queued_entry(queue.popleft())
            self.queued_bytes -= len(message.payload)
            if message.expires_at and self._expired(message):
                self._forget_queued(message, packet_id)
                continue
            flight = new_flight(message, qos, retain, False, packet_id, sub_ids, link)
            if flight is None:  # as if it had been sent [MQTT-3.1.2-25]
                self._forget_queued(message, packet_id)
                self._drop(message, self._too_large())
                continue
            inflight = self._owned_inflight()
            inflight[packet_id] = flight
            if self.persistent:
                self.env.store.append(OutgoingSent(self.client_id, message.msg_id, packet_id))
            peer.put(flight)

    def _forget_queued(self, message: Message, packet_id: int) -> None:
        """The store's record of a queued message that will not be sent ends: the records
        say it went into flight under the (unused) `packet_id` and was done with at once."""
        if self.persistent:
            self.env.store.append(OutgoingSent(self.client_id, message.msg_id, packet_id))
            self.env.store.append(OutgoingDone(self.client_id, packet_id))

    def on_puback(self, packet_id: int) -> bool:
        """PUBACK from the client; False if nothing was in flight with that id (ignored, as
        a late duplicate). A PUBACK for a QoS 2 message breaks the flow: protocol error."""
        flight = self.inflight.get(packet_id)
        if flight is None:
            return False
        if flight.qos != 1:
            check_ack("PUBACK", packet_id, flight)
        # What `_done` does, on the hottest path, without the call.
        del self.inflight[packet_id]
        if self._held:
            self._unhold(packet_id)
        self._write(OutgoingDone(self.client_id, packet_id))
        self._fill_window()
        return True

    def _done(self, packet_id: int) -> None:
        """The in-flight `packet_id` is acknowledged (or abandoned): free its place."""
        del self.inflight[packet_id]
        if self._held:
            self._unhold(packet_id)
        self._write(OutgoingDone(self.client_id, packet_id))
        self._fill_window()

    def _unhold(self, packet_id: int) -> None:
        """A held message was acknowledged anyway (received on an earlier connection)."""
        if packet_id in self._held:
            self._held.remove(packet_id)

    def on_pubrec(self, packet_id: int) -> bool:
        """PUBREC from the client: PUBREL is owed from now on [MQTT-4.3.3-1]. An id not in
        flight gets PUBREL too (as Mosquitto does); a QoS 1 message's is a protocol error."""
        flight = self.inflight.get(packet_id)
        if flight is not None:
            check_ack("PUBREC", packet_id, flight)
        if flight is not None and not flight.released:
            flight.released = True
            self._write(OutgoingReleased(self.client_id, packet_id))
        if self.peer is not None:
            self.peer.put(PubRel(packet_id))  # [MQTT-4.3.3-1]
        return flight is not None

    def on_pubcomp(self, packet_id: int) -> bool:
        flight = self.inflight.get(packet_id)
        if flight is None:
            return False  # a late duplicate
        check_ack("PUBCOMP", packet_id, flight)
        self._done(packet_id)
        return True

    # -- incoming QoS 2 ----------------------------------------------------------------------

    def receive_qos2(self, packet_id: int) -> bool:
        """True the first time `packet_id` arrives; a resend before PUBREL returns False, so
        the message is not forwarded twice [MQTT-4.3.3-2]."""
        if packet_id in self.incoming_qos2:  # [MQTT-4.3.3-2]
            return False
        if self.incoming_qos2 is _NO_IDS:
            self.incoming_qos2 = set()
        self.incoming_qos2.add(packet_id)
        self._write(IncomingQos2(self.client_id, packet_id))
        return True

    def release_qos2(self, packet_id: int) -> bool:
        """PUBREL: the id may be used again; False if it was not awaiting release."""
        if packet_id not in self.incoming_qos2:
            return False
        self.incoming_qos2.discard(packet_id)
        self._write(IncomingReleased(self.client_id, packet_id))
        return True

    def abandon(self, packet_id: int) -> bool:
        """An MQTT 5 client's failure PUBREC (reason >= 0x80): that message is done, with no
        PUBREL (5.0 section 4.3.3); the window moves on."""
        flight = self.inflight.get(packet_id)
        if flight is None:
            return False
        check_ack("PUBREC", packet_id, flight)
        self._done(packet_id)
        return True

    def set_expiry(self, expiry: int, persistent: bool | None = None) -> None:
        """A new session expiry interval (MQTT 5 CONNECT or DISCONNECT). A session that stops
        being persistent is deleted from the store now, so a restart cannot bring it back."""
        if persistent is None:
            persistent = expiry > 0
        if self.persistent and not persistent:
            self.env.store.append(SessionDeleted(self.client_id))
        self.persistent = persistent
        self.expiry = expiry
        if persistent and self.peer is not None:
            self._write(SessionOpened(self.client_id, self.protocol_level, expiry))

    # -- accounting --------------------------------------------------------------------------

    def owed(self) -> int:
        """Messages held for this client: in flight plus queued."""
        return len(self.inflight) + len(self.queue)

    def _drop(self, message: Message, why: str, expired: bool = False) -> None:
        """Count a message not sent to this client; the drop log says it (core/drop_log.py).
        An expired one is the publisher's wish, not a failure: counted apart."""
        if expired:
            self.env.stats.publish_expired += 1
        else:
            self.env.stats.publish_dropped += 1
        self.env.drops.note(self.client_id, message.topic, why, expired)

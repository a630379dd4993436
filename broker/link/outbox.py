"""`Outbox`: everything one connection has to write, and the only ways it reaches the socket.

Items are wire bytes (a QoS 0 PUBLISH laid out by its session), packets, `Delivery`s (a QoS
1/2 PUBLISH, laid out here; an `OwnDelivery` may bring its own bytes), and `WaitDurable`
markers: nothing after a marker may be written before the store says its record is durable.
Items go out in the order they were put, never skipping one: MQTT 5 topic aliases rely on it
(the PUBLISH that sets an alias is put, so written, before those that use it).

Two writers, never at once:
- The direct flush. A put schedules, once per hub loop iteration, `Flusher` to write every
  outbox that was filled during the iteration, with a non-blocking send, from the hub. This
  is the common case (a PUBACK, a CONNACK, a delivery to a subscriber keeping up), and it
  costs no greenlet switch at all, as a C broker writes at the end of its loop iteration.
- The writer greenlet, spawned for whatever the direct flush could not do: the end of a
  write the socket did not take (a slow reader; the transport keeps it and sends it first),
  or a transport that cannot write without blocking (TLS).
  While it exists, puts wake it and nothing else writes; the watchdog ends it after
  `WRITER_IDLE_EXIT` idle seconds.
A `WaitDurable` the store has not satisfied yet costs no greenlet either: the outbox asks
the store to call it back after the commit (`on_durable`) and flushes again then, so one
group commit releases fifty publishers' PUBACKs without fifty greenlet switches.
The outbox never blocks a publisher: `full()` tells sessions to drop QoS 0 (counted and
logged by the session); QoS 1/2 are bounded by the session's in-flight window.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any, Protocol

import gevent
from gevent.event import Event

from ..codec import encode
from ..core.delivery import Delivery, OwnDelivery
from ..core.session import WaitDurable
from ..errors import MQTTError, StoreUnavailable
from ..net.transport import Transport

if TYPE_CHECKING:
    from ..core.context import BrokerContext
    from ..core.protocol import ClientProtocol

OUTBOX_LIMIT = 10_000  # items waiting for a slow reader before QoS 0 is dropped
WRITER_IDLE_EXIT = 1.0  # seconds an idle writer greenlet lingers before the watchdog ends it
FLUSH_ON_CLOSE_TIMEOUT = 2.0  # seconds a closing connection may spend writing its last bytes


class _Unsent(bytes):
    """A direct flush the transport could not take (TLS, a WebSocket frame in progress):
    sent first by the writer, counted in the stats already."""

    __slots__ = ()


class Flusher:
    """Writes the outboxes filled during one hub loop iteration, at its end, from the hub;
    a reader calls `flush_now` once it has handled a read, so its deliveries and replies go
    out before it waits for the socket again (one syscall and a switch sooner)."""

    __slots__ = ("_dirty", "_loop", "_scheduled")

    def __init__(self) -> None:
        self._dirty: list[Outbox] = []
        self._scheduled = False
        self._loop = gevent.get_hub().loop

    def add(self, outbox: Outbox) -> None:
        self._dirty.append(outbox)
        if not self._scheduled:
            self._scheduled = True
            self._loop.run_callback(self._run)

    def _run(self) -> None:
        self._scheduled = False
        self.flush_now()

    def flush_now(self) -> None:
        dirty = self._dirty
        if dirty:
            self._dirty = []
            for outbox in dirty:
                outbox.flush()


class Owner(Protocol):
    """The connection an outbox writes for."""

    transport: Transport
    ctx: BrokerContext
    protocol: ClientProtocol

    def write_failed(self, exc: Exception) -> None:
        """The OSError or MQTTError that ends the connection."""
        ...


class Outbox:
    __slots__ = ("closed", "items", "owner", "_awaiting", "_barrier", "_dirty", "_flusher",
                 "_idle_since", "_wake", "_writer")

    def __init__(self, owner: Owner, flusher: Flusher | None) -> None:
        self.items: list[Any] = []
        self.owner = owner
        self.closed = False
        self._barrier: WaitDurable | None = None  # the WaitDurable still in `items`, if any
        self._awaiting = False  # a store callback (`on_durable`) is registered
        self._flusher = flusher  # None: always a writer greenlet (tests, transports that block)
        self._dirty = False  # scheduled with the flusher
        self._writer: gevent.Greenlet | None = None
        self._wake: Event | None = None
        self._idle_since = 0.0  # when the writer last found nothing to write

    def put(self, item: Any) -> None:
        if self.closed:
            return
        if type(item) is WaitDurable:
            barrier = self._barrier
            if barrier is not None:
                # Durability is reached in record order, so one barrier raised to the later
                # record guards everything behind it: one marker per batch, not per publish.
                if item.seq > barrier.seq:
                    barrier.seq = item.seq
                return
            self._barrier = item
        self.items.append(item)
        if self._writer is not None:
            wake = self._wake
            if wake is not None:
                wake.set()
        elif not self._dirty:
            self._dirty = True
            if self._flusher is None:
                self._spawn_writer()
            else:
                self._flusher.add(self)

    def full(self) -> bool:
        return len(self.items) >= OUTBOX_LIMIT

    # -- the direct flush ----------------------------------------------------------------------

    def flush(self) -> None:
        """From the hub: write what can go out now without blocking; hand the rest over."""
        self._dirty = False
        if self._writer is not None or self.closed or not self.items:
            return
        items, self.items = self.items, []
        self._barrier = None
        try:
            chunks, rest = self._encode(items)
            transport = self.owner.transport
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                if transport.try_send(data):  # written, or its end held by the transport
                    self.owner.ctx.stats.bytes_sent += len(data)
                else:  # this transport cannot write without blocking now
                    rest.insert(0, _Unsent(data))
        except (OSError, MQTTError) as exc:
            self.closed = True
            # We may be in the hub (the Flusher's callback), where nothing may block; closing
            # a connection can (a WebSocket close handshake), so it runs in a greenlet.
            gevent.spawn(self.owner.write_failed, exc)
            return
        if rest:
            self.items[:0] = rest
        if transport.unsent or (rest and type(rest[0]) is not WaitDurable):
            self._spawn_writer()
        elif rest:
            self._await_durable(rest[0])

    def _await_durable(self, barrier: WaitDurable) -> None:
        """The head of `items` waits for the store: fail now if the store cannot write, else
        flush again when it has (the barrier stays, so later markers only raise it)."""
        self._barrier = barrier
        store = self.owner.ctx.store
        if store.failure is not None:
            self.closed = True
            gevent.spawn(self.owner.write_failed,
                         StoreUnavailable(f"the journal cannot be written: {store.failure}"))
        elif not self._awaiting:
            self._awaiting = True
            store.on_durable(barrier.seq, self._durable_reached)

    def _durable_reached(self) -> None:
        """From the store's writer, after a commit or a failed write: flush at the end of
        this loop iteration (the flush looks again at what is durable, and at `failure`)."""
        self._awaiting = False
        if not self._dirty and not self.closed and self._flusher is not None:
            self._dirty = True
            self._flusher.add(self)

    # -- the writer greenlet -------------------------------------------------------------------

    def _spawn_writer(self) -> None:
        self._writer = gevent.spawn(self._write_loop)

    def _write_loop(self) -> None:
        try:
            while True:
                if not self.items:
                    transport = self.owner.transport
                    if transport.unsent:  # the end of a direct flush the socket did not take
                        transport.sendall(b"")
                        continue
                    if self.closed:
                        return
                    wake = self._wake
                    if wake is None:
                        wake = self._wake = Event()
                    wake.clear()
                    # No timeout (a timer per wait showed in the profile): the watchdog ends
                    # a writer that stays idle (`reap_idle_writer`).
                    self._idle_since = time.monotonic()
                    wake.wait()
                    self._idle_since = 0.0
                    continue
                items, self.items = self.items, []
                self._barrier = None
                self._write_blocking(items)
        except gevent.GreenletExit:
            pass  # reaped while idle
        except (OSError, MQTTError) as exc:
            if not self.closed:
                self.closed = True
                self.owner.write_failed(exc)
        finally:
            if self._writer is gevent.getcurrent():
                self._writer = None
                self._dirty = False
                if self.items and not self.closed:  # a put raced the reaping
                    self._spawn_writer()

    def reap_idle_writer(self, now: float) -> None:
        """End the writer greenlet after WRITER_IDLE_EXIT idle seconds: an idle connection
        should hold no greenlet at all."""
        idle = self._idle_since
        if idle and now - idle >= WRITER_IDLE_EXIT and self._writer is not None \
                and not self.items:
            self._writer.kill(block=False)

    def _write_blocking(self, items: list[Any]) -> None:
        while items:
            chunks, items = self._encode(items)
            if chunks:
                self._send(chunks)
            if items:  # a WaitDurable the store has not satisfied yet
                self.owner.ctx.store.wait_durable(items[0].seq)
                items = items[1:]

    def _send(self, chunks: list[bytes]) -> None:
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.owner.transport.sendall(data)
        self.owner.ctx.stats.bytes_sent += len(data)

    def _encode(self, items: list[Any]) -> tuple[list[bytes], list[Any]]:
        """Wire bytes for every item up to the first `WaitDurable` the store has not satisfied
        (returned as the head of the rest), counted in the stats."""
        owner = self.owner
        level = owner.protocol.protocol_level
        stats = owner.ctx.stats
        store = owner.ctx.store
        chunks: list[bytes] = []
        publishes = payload_bytes = 0
        rest: list[Any] = []
        for index, item in enumerate(items):
            kind = type(item)
            if kind is bytes or kind is _Unsent:
                # A QoS 0 PUBLISH laid out (and counted) by its session, or the end of a
                # direct flush that did not fit (counted then).
                chunks.append(item)
            elif kind is Delivery:
                message = item.message
                chunks.append(message.wire(item.qos, item.retain, item.dup, item.packet_id,
                                           level))
                publishes += 1
                payload_bytes += len(message.payload)
            elif kind is OwnDelivery:
                message = item.message
                data = item.data  # its own bytes (MQTT 5), or none: the message's shared ones
                chunks.append(data if data is not None else
                              message.wire(item.qos, item.retain, item.dup, item.packet_id, level))
                publishes += 1
                payload_bytes += len(message.payload)
            elif kind is WaitDurable:
                if not store.is_durable(item.seq):
                    rest = items[index:]
                    break
            else:
                chunks.append(encode(item, level))
        stats.publish_sent += publishes
        stats.publish_bytes_sent += payload_bytes
        unsent = 1 if chunks and type(chunks[0]) is _Unsent else 0  # only ever first
        stats.messages_sent += len(chunks) - unsent
        return chunks, rest

    # -- closing -------------------------------------------------------------------------------

    def close(self, flush: bool) -> None:
        """Stop writing. With `flush`, first write what is queued (a refusal CONNACK, a
        DISCONNECT), bounded in time; without, drop it."""
        writer = self._writer
        current = gevent.getcurrent()
        if flush:
            with gevent.Timeout(FLUSH_ON_CLOSE_TIMEOUT, False):
                if writer is not None and writer is not current:
                    self.closed = True  # the writer drains, then ends
                    if self._wake is not None:
                        self._wake.set()
                    writer.join()
                if self.items and writer is not current:
                    items, self.items = self.items, []
                    # If the peer is already gone, the close that follows is all that is left.
                    with contextlib.suppress(OSError, MQTTError):
                        self._write_blocking(items)
        self.closed = True
        if writer is not None and writer is not current:
            writer.kill(block=False)
        self._writer = None

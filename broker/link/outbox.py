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
The outbox never blocks a publisher, and what it holds is bounded in bytes: `offer()`
refuses QoS 0 bytes when it holds `max_outbox_bytes` or more (wire bytes of QoS 0 PUBLISHes
and payload bytes of QoS 1/2 ones, also those taken by the writer and not sent yet), and
sessions then drop QoS 0 (counted and logged by the session); QoS 1/2 are bounded by the
session's in-flight window.
What one write joins is at most `SEND_SLICE` bytes: the bytes of a message are shared by
every subscriber's outbox, so a slow reader holds a copy of one slice of them, not of all.
Producers (`produce`: the retained messages a new subscription is owed) put what they have
in bulk only while less than half the bound waits, refilled after every write and every read,
so a client that reads gets all of it, at its pace, with nothing dropped.
A closed outbox lets go of its items and of its connection at once: no reference cycle is
left for the collector, so a slow reader's memory is freed the moment it leaves.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
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

SEND_SLICE = 65_536  # bytes joined for one write: what a slow reader holds a copy of
PRODUCE_BUDGET = 262_144  # bytes producers may put at once when the outbox has no bound
WRITER_IDLE_EXIT = 1.0  # seconds an idle writer greenlet lingers before the watchdog ends it
FLUSH_ON_CLOSE_TIMEOUT = 2.0  # seconds a closing connection may spend writing its last bytes
# Every outbox without producers shares this list (never appended to): an idle connection's
# outbox keeps no list of its own (56 bytes each).
_NO_PRODUCERS: list[Callable[[int], bool]] = []


class _Encoded:
    """Wire bytes encoded (and counted in the stats) that a direct flush did not write (TLS,
    a WebSocket frame in progress, a socket that took only part): sent first by the writer."""

    __slots__ = ("chunks", "size")

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.size = sum(map(len, chunks))


def _slices(chunks: list[bytes]) -> Iterator[bytes]:
    """`chunks` joined into writes of about `SEND_SLICE` bytes (a bigger chunk goes alone)."""
    start = size = 0
    for end, chunk in enumerate(chunks, 1):
        size += len(chunk)
        if size >= SEND_SLICE:
            yield chunks[start] if end - start == 1 else b"".join(chunks[start:end])
            start, size = end, 0
    if start < len(chunks):
        yield chunks[start] if len(chunks) - start == 1 else b"".join(chunks[start:])


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
    __slots__ = ("closed", "items", "owner", "producers", "size", "_awaiting", "_barrier",
                 "_dirty", "_env", "_flusher", "_idle_since", "_sending", "_wake", "_writer")

    def __init__(self, owner: Owner, flusher: Flusher | None) -> None:
        self.items: list[Any] = []
        self.owner = owner
        self.closed = False
        self.size = 0  # bytes in `items`: wire bytes, and the payloads of QoS 1/2 deliveries
        self._sending = 0  # bytes the writer took from `items` and has not written yet
        self._env = owner.ctx.env  # its `limits` follow a reload
        self.producers = _NO_PRODUCERS  # feeds in the order they were given
        self._barrier: WaitDurable | None = None  # the WaitDurable still in `items`, if any
        self._awaiting = False  # a store callback (`on_durable`) is registered
        self._flusher = flusher  # None: always a writer greenlet (tests, transports that block)
        self._dirty = False  # scheduled with the flusher
        self._writer: gevent.Greenlet[..., Any] | None = None
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
        else:
            kind = type(item)
            if kind is bytes:
                self.size += len(item)
            elif kind is Delivery or kind is OwnDelivery:
                self.size += len(item.message.payload)
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

    def offer(self, data: bytes) -> bool:
        """`put` for a QoS 0 PUBLISH's wire bytes, unless `max_outbox_bytes` (0: no limit)
        are waiting already: then False, to be dropped. A message bigger than the limit still
        goes to an empty outbox. One call per delivery on the fan-out path, so `put` inlined."""
        if self.closed:
            return True  # as `put`: nothing more is written, nothing counted as a drop
        size = self.size
        limit = self._env.limits.max_outbox_bytes
        if limit and size + self._sending >= limit:
            return False
        self.size = size + len(data)
        self.items.append(data)
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
        return True

    # -- producers ---------------------------------------------------------------------------

    def produce(self, feed: Callable[[int], bool]) -> None:
        """Have `feed(budget)` put about `budget` more bytes whenever less than half the bound
        waits, until it returns True (done); feeds run one after the other."""
        if self.closed:
            return
        if not self.producers:
            self.producers = [feed]  # its own list, from the first producer on
            self.refill()
        else:
            self.producers.append(feed)

    def refill(self) -> None:
        """Let the producers put more, if there is room (after a write, after a read)."""
        producers = self.producers
        while producers and not self.closed:
            bound = self._env.limits.max_outbox_bytes or 2 * PRODUCE_BUDGET
            room = bound // 2 - self.size - self._sending
            if room <= 0 or not producers[0](room):
                return  # called again when the outbox drains, or after the next read
            producers.pop(0)

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
                left = self._try_send(chunks, transport)
                if left is not None:  # for the writer, first
                    rest.insert(0, left)
                    self.size += left.size
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
        if self.producers:
            self.refill()

    def _try_send(self, chunks: list[bytes], transport: Transport) -> _Encoded | None:
        """Write `chunks` without blocking, a slice at a time while the socket takes them
        whole; what is left for the writer (the end of a slice stays in the transport)."""
        stats = self.owner.ctx.stats
        if len(chunks) == 1 or sum(map(len, chunks)) <= SEND_SLICE:  # one write: the usual
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            if not transport.try_send(data):  # this transport cannot write without blocking
                return _Encoded(chunks)
            stats.bytes_sent += len(data)
            return None
        sent = 0
        for data in _slices(chunks):
            if not transport.try_send(data):
                break
            stats.bytes_sent += len(data)
            sent += len(data)
            if transport.unsent:  # the socket is full: the rest waits for the writer
                break
        else:
            return None
        # Back to chunks for what was not handed over, so no big join is held meanwhile.
        at = 0
        while sent > 0:
            sent -= len(chunks[at])
            at += 1
        return _Encoded(chunks[at:]) if at < len(chunks) else None

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
                if self.producers:
                    self.refill()
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
        """Write `chunks`, blocking, a slice at a time; they count as waiting until written."""
        transport = self.owner.transport
        stats = self.owner.ctx.stats
        total = sum(map(len, chunks))
        if total <= SEND_SLICE or len(chunks) == 1:  # one write: the usual
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            self._sending = total
            try:
                transport.sendall(data)
            finally:
                self._sending = 0
            stats.bytes_sent += total
            return
        self._sending = total
        try:
            for data in _slices(chunks):
                transport.sendall(data)
                stats.bytes_sent += len(data)
                self._sending -= len(data)
        finally:
            self._sending = 0

    def _encode(self, items: list[Any]) -> tuple[list[bytes], list[Any]]:
        """Wire bytes for every item up to the first `WaitDurable` the store has not satisfied
        (returned as the head of the rest), counted in the stats."""
        owner = self.owner
        level = owner.protocol.protocol_level
        stats = owner.ctx.stats
        store = owner.ctx.store
        chunks: list[bytes] = []
        publishes = payload_bytes = raw_bytes = encoded = 0
        rest: list[Any] = []
        for index, item in enumerate(items):
            kind = type(item)
            if kind is bytes:  # a QoS 0 PUBLISH laid out (and counted) by its session
                chunks.append(item)
                raw_bytes += len(item)
            elif kind is _Encoded:  # the end of a direct flush that was not written
                chunks.extend(item.chunks)
                raw_bytes += item.size
                encoded += len(item.chunks)
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
        stats.messages_sent += len(chunks) - encoded  # those were counted when first encoded
        self.size -= raw_bytes + payload_bytes
        return chunks, rest

    # -- closing -------------------------------------------------------------------------------

    def close(self, flush: bool) -> None:
        """Stop writing. With `flush`, first write what is queued (a refusal CONNACK, a
        DISCONNECT), bounded in time; without, drop it."""
        writer = self._writer
        current = gevent.getcurrent()
        if flush:
            with gevent.Timeout(FLUSH_ON_CLOSE_TIMEOUT, False):  # type: ignore[arg-type]
                if writer is not None and writer is not current:
                    self.closed = True  # the writer drains, then ends
                    if self._wake is not None:
                        self._wake.set()
                    writer.join()
                # The writer itself may close with a flush: after the store failed under a
                # CONNACK, whose refusal is then all there is to write.
                if self.items:
                    items, self.items = self.items, []
                    # If the peer is already gone, the close that follows is all that is left.
                    with contextlib.suppress(OSError, MQTTError):
                        self._write_blocking(items)
        self.closed = True
        if writer is not None and writer is not current:
            writer.kill(block=False)
        self._writer = None
        # What was not written is dropped now, and the connection, which holds this outbox,
        # is let go: no cycle is left for the collector (whose oldest generation rarely runs).
        self.items = []
        self.size = 0
        self.producers = _NO_PRODUCERS
        self.owner = None  # type: ignore[assignment]

"""`Connection`: one client's reader loop, its writer greenlet and its outbox.

- The reader (the greenlet the listener spawned) reads big chunks, feeds the `FrameDecoder`
  and hands every complete packet in the buffer to the `ClientProtocol`, then moves the
  deadline: `connect_timeout` until CONNECT, 1.5 x keepalive after it [MQTT-3.1.2-24]. The
  server's watchdog closes connections whose deadline passed.
- The writer is the only code that writes to the socket. It drains the whole outbox, encodes
  each item, and sends the batch with one `sendall`; a `WaitDurable` marker makes it flush
  what precedes the marker and wait for the store before writing what follows. It is spawned
  when there is something to write and exits after a few idle seconds, so an idle
  connection holds one greenlet, not two.
- The outbox never blocks a publisher: `full()` tells sessions to drop QoS 0 (counted and
  logged by the session); QoS 1/2 are bounded by the session's in-flight window.
- This is the single place where an `MQTTError` becomes bytes (CONNACK 0x01 for an
  unsupported protocol level, a DISCONNECT with a reason code in MQTT 5) and a log line.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import gevent
from gevent.event import Event

from .codec import ConnAck, Disconnect, FrameDecoder, encode
from .context import BrokerContext
from .errors import MQTTError, ReasonCode, UnsupportedProtocolVersion
from .protocol import (
    AWAIT_CONNECT,
    CONNECTED,
    PEER_CLOSED,
    Authority,
    ClientProtocol,
    CloseReason,
)
from .session import WaitDurable
from .transport import Transport

log = logging.getLogger("greenfly.connection")

OUTBOX_LIMIT = 10_000  # items waiting for a slow reader before QoS 0 is dropped
WRITER_IDLE_EXIT = 5.0  # seconds an idle writer greenlet lingers before the watchdog ends it
FAIR_READ_SIZE = 16_384  # a read this big likely left more waiting: let others run first
FAIR_SLICE = 0.002  # and at least this often, whatever the reads
FLUSH_ON_CLOSE_TIMEOUT = 2.0  # seconds a closing connection may spend writing its last bytes
NO_DEADLINE = float("inf")


class Connection:
    __slots__ = ("ctx", "transport", "protocol", "decoder", "outbox", "closed", "deadline",
                 "_writer", "_wake", "_writer_idle_since", "__weakref__")

    def __init__(self, ctx: BrokerContext, transport: Transport,
                 security: Callable[[], Authority] | None = None,
                 identity: str | None = None) -> None:
        self.ctx = ctx
        self.transport = transport
        self.protocol = ClientProtocol(ctx, self, transport.address, security, identity)
        self.decoder = FrameDecoder(server_side=True,
                                    max_packet_size=ctx.config.limits.max_packet_size)
        self.outbox: list[Any] = []
        self.closed: CloseReason | None = None
        self.deadline = time.monotonic() + ctx.config.broker.connect_timeout
        self._writer: gevent.Greenlet | None = None
        self._wake = Event()
        self._writer_idle_since = 0.0  # when the writer last found nothing to write

    # -- the Peer interface (used by ClientProtocol and Session) ------------------------------

    @property
    def protocol_level(self) -> int:
        return self.protocol.protocol_level

    def put(self, item: Any) -> None:
        if self.closed is not None:
            return
        self.outbox.append(item)
        if self._writer is None:
            self._writer = gevent.spawn(self._write_loop)
        else:
            self._wake.set()

    def full(self) -> bool:
        return len(self.outbox) >= OUTBOX_LIMIT

    def terminate(self, reason: CloseReason) -> None:
        """Close now, from any greenlet: takeover, watchdog, server shutdown."""
        self._close(reason, flush=reason.reason_code == ReasonCode.SERVER_SHUTTING_DOWN)

    # -- reading -------------------------------------------------------------------------------

    def run(self) -> None:
        """The reader loop; returns when the connection is closed."""
        stats = self.ctx.stats
        decoder = self.decoder
        protocol = self.protocol
        transport = self.transport
        stats.sockets_total += 1
        yielded_at = time.monotonic()
        try:
            while self.closed is None:
                data = transport.recv()
                if not data:
                    self._close(PEER_CLOSED, flush=False)
                    return
                stats.bytes_received += len(data)
                decoder.feed(data)
                received = 0
                while True:
                    packet = decoder.next_packet()
                    if packet is None:
                        break
                    received += 1
                    protocol.handle(packet)
                    if protocol.close_after_flush is not None:
                        stats.messages_received += received
                        self._close(protocol.close_after_flush, flush=True)
                        return
                now = time.monotonic()
                if received:
                    stats.messages_received += received
                    if protocol.state is CONNECTED:
                        keepalive = protocol.keepalive
                        self.deadline = now + 1.5 * keepalive if keepalive else NO_DEADLINE
                if len(data) >= FAIR_READ_SIZE or now - yielded_at >= FAIR_SLICE:
                    # A read that finds data waiting returns without a switch, so a client
                    # that keeps its socket full would never give the hub back: no writer,
                    # no other reader, no watchdog would run. Big reads and a time slice
                    # bound that; small, slow reads block (and so switch) by themselves.
                    gevent.sleep(0)
                    yielded_at = now
        except MQTTError as exc:
            self._protocol_error(exc)
        except OSError as exc:
            if self.closed is None:
                self._close(CloseReason.socket_error(str(exc) or type(exc).__name__),
                            flush=False)
        finally:
            if self.closed is None:
                self._close(CloseReason("connection handler ended"), flush=False)

    def _protocol_error(self, exc: MQTTError) -> None:
        protocol = self.protocol
        if isinstance(exc, UnsupportedProtocolVersion) and protocol.state is AWAIT_CONNECT:
            # [MQTT-3.1.2-2]: answer CONNACK 0x01 (in the 3.1.1 encoding) and close.
            self.outbox.append(ConnAck(ReasonCode.UNSUPPORTED_PROTOCOL_VERSION))
            reason = CloseReason(f"connection refused: {exc.message}", False, exc.reason_code)
            log.info("connection refused: %s: %s", protocol.describe(), exc.message)
            self._close(reason, flush=True)
            return
        reason = CloseReason.protocol_error(exc)
        log.warning("closing %s: %s", protocol.describe(), reason.text)
        if protocol.state is CONNECTED and protocol.protocol_level >= 5:
            self.outbox.append(Disconnect(exc.reason_code))
            self._close(reason, flush=True)
        else:
            self._close(reason, flush=False)

    # -- writing -------------------------------------------------------------------------------

    def _write_loop(self) -> None:
        try:
            while True:
                if not self.outbox:
                    if self.closed is not None:
                        return
                    self._wake.clear()
                    # No timeout here (a timer per wait showed in the profile): the watchdog
                    # ends a writer that stays idle (`reap_idle_writer`).
                    self._writer_idle_since = time.monotonic()
                    self._wake.wait()
                    self._writer_idle_since = 0.0
                    continue
                items = self.outbox
                self.outbox = []
                self._write(items)
        except gevent.GreenletExit:
            pass  # reaped while idle
        except OSError as exc:
            if self.closed is None:
                self._close(CloseReason.socket_error(f"write failed: {exc}"), flush=False)
        except MQTTError as exc:
            if self.closed is None:
                self._close(CloseReason(f"store failure: {exc.message}", True, exc.reason_code),
                            flush=False)
        finally:
            if self._writer is gevent.getcurrent():
                self._writer = None
                if self.outbox and self.closed is None:  # a put raced the reaping
                    self._writer = gevent.spawn(self._write_loop)

    def reap_idle_writer(self, now: float) -> None:
        """End the writer greenlet if it has had nothing to write for WRITER_IDLE_EXIT
        seconds, so an idle connection holds one greenlet, not two."""
        idle = self._writer_idle_since
        if idle and now - idle >= WRITER_IDLE_EXIT and self._writer is not None \
                and not self.outbox:
            self._writer.kill(block=False)

    def _write(self, items: list[Any]) -> None:
        level = self.protocol.protocol_level
        stats = self.ctx.stats
        store = self.ctx.store
        chunks: list[bytes] = []
        publishes = 0
        payload_bytes = 0
        for item in items:
            kind = type(item)
            if kind is bytes:  # a QoS 0 PUBLISH, already laid out (and counted) by its session
                chunks.append(item)
            elif kind is tuple:
                message, qos, retain, dup, packet_id = item
                chunks.append(message.wire(qos, retain, dup, packet_id, level))
                publishes += 1
                payload_bytes += len(message.payload)
            elif kind is WaitDurable:
                if not store.is_durable(item.seq):
                    if chunks:
                        self._send(chunks)
                        chunks = []
                    store.wait_durable(item.seq)
            else:
                chunks.append(encode(item, level))
        stats.publish_sent += publishes
        stats.publish_bytes_sent += payload_bytes
        stats.messages_sent += len(chunks)
        if chunks:
            self._send(chunks)

    def _send(self, chunks: list[bytes]) -> None:
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.transport.sendall(data)
        self.ctx.stats.bytes_sent += len(data)

    # -- closing -------------------------------------------------------------------------------

    def _close(self, reason: CloseReason, flush: bool) -> None:
        if self.closed is not None:
            return
        self.closed = reason
        try:
            self.protocol.connection_lost(reason)
        finally:
            writer = self._writer
            current = gevent.getcurrent()
            if flush:
                self._flush_on_close(writer, current)
            elif writer is not None and writer is not current:
                writer.kill(block=False)
            self._writer = None
            self.transport.close(reason.reason_code)

    def _flush_on_close(self, writer: gevent.Greenlet | None, current: Any) -> None:
        """Write what is still queued (a refusal CONNACK, a DISCONNECT), bounded in time."""
        with gevent.Timeout(FLUSH_ON_CLOSE_TIMEOUT, False):
            if writer is not None and writer is not current:
                self._wake.set()
                writer.join()
            if self.outbox and writer is not current:
                items = self.outbox
                self.outbox = []
                # If the peer is already gone, the close below is all that is left to do.
                with contextlib.suppress(OSError, MQTTError):
                    self._write(items)
        if writer is not None and writer is not current:
            writer.kill(block=False)

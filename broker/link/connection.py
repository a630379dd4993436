"""`Connection`: one client's reader loop, its lifecycle, and its `Outbox`.

- The reader (the greenlet the listener spawned) reads big chunks, feeds the `FrameDecoder`
  and hands every complete packet in the buffer to the `ClientProtocol`, then moves the
  deadline: `connect_timeout` until CONNECT, 1.5 x keepalive after it [MQTT-3.1.2-24]. The
  server's watchdog closes connections whose deadline passed.
- The first read must start a CONNECT: any other first byte closes the connection at once,
  the log saying what it looked like (codec/first_bytes.py). The check sits here, on the
  bytes the transport hands over, so a transport that strips a header of its own first
  (PROXY protocol) leaves the MQTT bytes to it.
- Writing is the `Outbox`'s: a direct non-blocking flush at the end of the hub's loop
  iteration, and a writer greenlet only for what cannot go out at once (see link/outbox.py).
- A connection with nothing to read for `PARK_AFTER` seconds gives up its reader greenlet
  (`transport.recv` raises `Idle`): a libev read watcher starts a new reader when bytes
  arrive. A suspended greenlet costs about 8 KiB (its C stack slice and Python data stack),
  so an idle connection then costs its objects only. `Idle` is raised only while waiting for
  the socket, so no byte is ever taken and left behind. A plain TCP reader parks at once
  after the read that carried CONNECT: a connect storm then costs no timer, no read that
  finds nothing and no switch per connection (measured: 25-35 % more connects/s).
- A CONNECT's credentials are checked here, not in the protocol (which never waits): the
  `AuthRequest` it returns is performed through the listener's security in this reader,
  and the verdict handed back (`ClientProtocol.authenticated`).
- This is the single place where an `MQTTError` becomes bytes (CONNACK 0x01 for an
  unsupported protocol level, a DISCONNECT with a reason code in MQTT 5) and a log line,
  and `run` the single handler of any other error: logged with its traceback, it closes.
"""

from __future__ import annotations

import logging
import select
import time
from collections.abc import Callable
from typing import Any

import gevent

from ..codec import ConnAck, Disconnect, FrameDecoder
from ..codec.first_bytes import not_connect
from ..codec.reasons import REASONS
from ..core.cluster_hooks import ClusterHooks
from ..core.connect_flow import will_message
from ..core.context import BrokerContext
from ..core.protocol import (
    AWAIT_CONNECT,
    CONNECTED,
    GONE,
    PEER_CLOSED,
    AuthRequest,
    AuthResult,
    ClientProtocol,
    CloseReason,
    SecuritySource,
)
from ..errors import (
    MQTTError,
    ProtocolError,
    ReasonCode,
    StoreUnavailable,
    UnsupportedProtocolVersion,
)
from ..net.arrival import arrival_order, start_reader
from ..net.transport import Idle, Transport
from .outbox import Flusher, Outbox

log = logging.getLogger("greenfly.connection")

FAIR_READ_SIZE = 16_384  # a read this big likely left more waiting: let others run first
FAIR_SLICE = 0.002  # and at least this often, whatever the reads
PARK_AFTER = 1.0  # seconds without a read after which an idle reader greenlet is released
NO_DEADLINE = float("inf")
DISCONNECT_REASONS = REASONS["DISCONNECT"][0]


def refuse_unless_connect(data: bytes) -> None:
    """Refuse a connection's first bytes on the first byte that is not a CONNECT's: an HTTP
    request or a TLS ClientHello is closed at once, not held until `connect_timeout`."""
    why = not_connect(data)
    if why is not None:
        raise ProtocolError(why)


class Connection:
    __slots__ = ("ctx", "transport", "protocol", "decoder", "outbox", "closed", "deadline",
                 "on_closed", "flusher", "_order", "_parks_at_once", "_resumed", "_watcher",
                 "__weakref__")

    def __init__(self, ctx: BrokerContext, transport: Transport,
                 source: SecuritySource | None = None,
                 identity: str | None = None,
                 on_closed: Callable[[Connection], None] | None = None,
                 flusher: Flusher | None = None) -> None:
        self.ctx = ctx
        self.transport = transport
        self.on_closed = on_closed  # told once, when the connection is closed
        self._resumed = False  # True once a reader has been started after parking
        self._watcher: Any = None  # the read watcher of a parked connection
        self._order = arrival_order()  # wakes it in turn with the other readers
        # Only a transport that holds no bytes of its own can park while bytes may be on the
        # way: its socket's read watcher sees everything there is.
        self._parks_at_once = transport.unbuffered
        self.protocol = ClientProtocol(ctx, self, transport.address, source, identity)
        self.decoder = FrameDecoder(server_side=True,
                                    max_packet_size=ctx.config.limits.max_packet_size)
        self.flusher = flusher
        self.outbox = Outbox(self, flusher)
        self.closed: CloseReason | None = None
        self.deadline = time.monotonic() + ctx.config.broker.connect_timeout

    # -- the Peer interface (used by ClientProtocol and Session) ------------------------------

    @property
    def protocol_level(self) -> int:
        return self.protocol.protocol_level

    def put(self, item: Any) -> None:
        if self.closed is None:
            self.outbox.put(item)

    def offer(self, data: bytes) -> bool:
        return self.closed is not None or self.outbox.offer(data)

    def produce(self, feed: Callable[[int], bool]) -> None:
        self.outbox.produce(feed)

    def terminate(self, reason: CloseReason) -> None:
        """Close now, from any greenlet: takeover, watchdog, server shutdown. An MQTT 5
        client is told why first, with a DISCONNECT (5.0 section 3.14)."""
        protocol = self.protocol
        if (reason.notify and self.closed is None and protocol.state is CONNECTED
                and protocol.protocol_level >= 5):
            self.outbox.items.append(Disconnect(reason.reason_code))
            self._close(reason, flush=True)
            return
        self._close(reason, flush=reason.reason_code == ReasonCode.SERVER_SHUTTING_DOWN)

    # -- reading -------------------------------------------------------------------------------

    def run(self) -> None:
        """The reader; returns when the connection is closed or parked, and never raises.

        This is the one handler of last resort: an error that is neither the client's
        (`MQTTError`) nor the network's (`OSError`) is a bug or an input nobody foresaw. It
        ends this connection only, and its traceback goes to the log, naming the client.
        """
        try:
            self._read()
        except Exception as exc:
            log.exception("closing %s: unexpected error", self.protocol.describe(),
                          extra={"client_id": self.protocol.client_id,
                                 "address": self.protocol.address})
            if self.closed is None:
                self._close(CloseReason(f"unexpected error: {type(exc).__name__}", True,
                                        ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR), flush=False)
        finally:
            if self.closed is None and self._watcher is None:
                self._close(CloseReason("connection handler ended"), flush=False)

    def _read(self) -> None:
        """Read, decode and handle until closed or parked; MQTT and socket errors close."""
        stats = self.ctx.stats
        decoder = self.decoder
        protocol = self.protocol
        transport = self.transport
        if not self._resumed:
            stats.sockets_total += 1
        yielded_at = time.monotonic()
        idle = gevent.Timeout(PARK_AFTER, Idle)  # one per reader run, restarted per wait
        try:
            while self.closed is None:
                try:
                    data = transport.recv(idle)
                except Idle:
                    self._sleep_until_readable()
                    return
                if not data:
                    self._close(PEER_CLOSED, flush=False)
                    return
                stats.bytes_received += len(data)
                if protocol.state is AWAIT_CONNECT and not decoder.buffered():
                    refuse_unless_connect(data)  # the connection's first bytes
                decoder.feed(data)
                connecting = protocol.state is AWAIT_CONNECT
                received = 0
                while True:
                    packet = decoder.next_packet()
                    if packet is None:
                        break
                    received += 1
                    request = protocol.handle(packet)
                    if request is not None:  # a CONNECT, asking for its credentials' check
                        self._authenticate(request)
                        if self.closed is not None:
                            break  # closed while the credentials were checked
                    if protocol.close_after_flush is not None:
                        stats.messages_received += received
                        self._close(protocol.close_after_flush, flush=True)
                        return
                if self.outbox.producers:  # an acknowledgement may have opened the window
                    self.outbox.refill()
                if self.flusher is not None:
                    self.flusher.flush_now()  # before waiting for the socket again
                now = time.monotonic()
                if received:
                    stats.messages_received += received
                    if protocol.state is CONNECTED:
                        keepalive = protocol.keepalive
                        # Silent for 1.5 x keepalive: the watchdog closes it [MQTT-3.1.2-24]
                        self.deadline = now + 1.5 * keepalive if keepalive else NO_DEADLINE
                        if connecting and self._parks_at_once:
                            # Most clients say nothing for a while after CONNACK (many never
                            # again but PINGREQ): park now rather than after PARK_AFTER, which
                            # saves a read that finds nothing, a timer and two switches.
                            self._sleep_until_readable()
                            return
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

    def _authenticate(self, request: AuthRequest) -> None:
        """Perform the `AuthRequest` the CONNECT just returned and hand the verdict back.

        This blocks this reader only (the slow-down after failed logins, a hash in the
        security's hash pool); packets that came after the CONNECT wait in the decoder, and
        later bytes in the socket, until the verdict is in, so they are handled after
        CONNACK as ever. Shutdown may close the connection meanwhile: then no verdict is
        handed back, as the protocol is no longer waiting for one.
        """
        protocol = self.protocol
        # The client has done its part: the wait for the verdict is the broker's, bounded by
        # the security (the slow-down, the hash queue's patience), not by connect_timeout,
        # which once closed first-time logins stuck behind a burst of guesses.
        self.deadline = NO_DEADLINE
        verdict = protocol.source.security.authenticate(request, self._still_wanted)
        cluster = protocol.ctx.router.cluster
        if (cluster is not None and self.closed is None
                and verdict.reason == ReasonCode.SUCCESS):
            verdict = self._claim(cluster, verdict)
        if self.closed is None:
            protocol.authenticated(verdict)

    def _claim(self, cluster: ClusterHooks, verdict: AuthResult) -> AuthResult:
        """In a cluster: the session becomes this node's (taken from another node, loaded
        from Redis) before the CONNACK says whether one is present."""
        protocol = self.protocol
        packet = protocol.pending_connect
        if packet is None:
            return verdict
        if protocol.protocol_level >= 5:
            persistent = protocol.limits.session_expiry > 0
        else:
            persistent = not packet.clean_start
        will = None if packet.will is None else will_message(protocol.client_id, packet.will)
        refusal = cluster.claim(protocol.client_id, packet.clean_start, persistent, will)
        if refusal is None:
            return verdict
        return AuthResult(refusal, verdict.username, "the cluster's store (Redis) is unavailable")

    def _still_wanted(self) -> bool:
        """False once this connection is closed or its peer hung up (FIN or reset), without
        taking a byte: a login waiting for a hash is then dropped unhashed."""
        if self.closed is not None:
            return False
        fileno = self.transport.fileno()
        if fileno < 0:
            return False
        poller = select.poll()
        poller.register(fileno, select.POLLRDHUP)  # POLLHUP and POLLERR come anyway
        return not poller.poll(0)

    # -- parking -------------------------------------------------------------------------------

    def _sleep_until_readable(self) -> None:
        if self.closed is not None:
            return
        fileno = self.transport.fileno()
        if fileno < 0:
            return  # the socket is gone: run's finally clause closes the connection
        self._watcher = gevent.get_hub().loop.io(fileno, 1)
        self._watcher.start(self._wake_reader)

    def _wake_reader(self) -> None:
        """In the hub, when a parked connection's socket is readable: a new reader."""
        self._stop_watcher()
        if self.closed is None:
            self._resumed = True
            # In arrival order, with the other readers (parked or blocked) readable now.
            self._order.ready(self._start_reader)

    def _start_reader(self) -> None:
        if self.closed is None:
            start_reader(self.run)

    def _stop_watcher(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()
            watcher.close()

    def _protocol_error(self, exc: MQTTError) -> None:
        protocol = self.protocol
        if isinstance(exc, UnsupportedProtocolVersion) and protocol.state is AWAIT_CONNECT:
            # [MQTT-3.1.2-2]: answer CONNACK 0x01 (in the 3.1.1 encoding) and close.
            self.outbox.items.append(ConnAck(ReasonCode.UNSUPPORTED_PROTOCOL_VERSION))
            reason = CloseReason(f"connection refused: {exc.message}", False, exc.reason_code)
            log.info("connection refused: %s: %s", protocol.describe(), exc.message)
            self._close(reason, flush=True)
            return
        # Malformed or against the rules: the connection closes [MQTT-4.8.0-1] [MQTT-4.13.1-1]
        reason = CloseReason.protocol_error(exc)
        log.warning("closing %s: %s", protocol.describe(), reason.text)
        if protocol.protocol_level >= 5 and protocol.state is CONNECTED:
            code = exc.reason_code
            if code not in DISCONNECT_REASONS:
                # A CONNACK-only code (a second CONNECT's unsupported level, 0x84) is no
                # DISCONNECT reason [MQTT-3.14.2-1]: that CONNECT is a protocol error.
                code = ReasonCode.PROTOCOL_ERROR
            self.outbox.items.append(Disconnect(code))  # 5.0 section 4.13.2
            self._close(reason, flush=True, linger=True)
        elif self.decoder.protocol_level >= 5 and protocol.state is AWAIT_CONNECT:
            # A bad MQTT 5 CONNECT may be answered with a CONNACK that says why (5.0 3.2.2.2);
            # the decoder knows the level even when it refused the CONNECT itself.
            protocol.protocol_level = self.decoder.protocol_level  # the CONNACK's encoding
            self.outbox.items.append(ConnAck(exc.reason_code))
            self._close(reason, flush=True)
        else:
            self._close(reason, flush=False)

    # -- writing -------------------------------------------------------------------------------

    def write_failed(self, exc: Exception) -> None:
        """The outbox could not write: the socket broke, or the store cannot make durable
        what an acknowledgement waits for (a v3.1.1 client gets no PUBACK and resends; a
        CONNACK becomes a refusal, 0x03 or 0x97)."""
        if self.closed is not None:
            return
        if isinstance(exc, StoreUnavailable):
            refusal = self.protocol.store_failed()
            if refusal is not None:
                # The CONNACK waited for its session's records, so nothing was sent yet:
                # the refusal replaces all of it (what came after waited behind it too).
                self.outbox.items = [refusal]
                reason = self.protocol.close_after_flush
                assert reason is not None
                self._close(reason, flush=True)
                return
        if isinstance(exc, MQTTError):
            self._close(CloseReason(f"store failure: {exc.message}", True, exc.reason_code),
                        flush=False)
        else:
            self._close(CloseReason.socket_error(f"write failed: {exc}"), flush=False)

    def reap_idle_writer(self, now: float) -> None:
        self.outbox.reap_idle_writer(now)

    # -- closing -------------------------------------------------------------------------------

    def _close(self, reason: CloseReason, flush: bool, linger: bool = False) -> None:
        if self.closed is not None:
            return
        self.closed = reason
        self.ctx.stats.disconnected(reason.kind)
        self._stop_watcher()  # before the socket closes: libev must not watch a dead fd
        try:
            self.protocol.connection_lost(reason)
        finally:
            if self.on_closed is not None:
                self.on_closed(self)
            self.outbox.close(flush)  # which lets go of this connection
            self.protocol.peer = GONE  # so does the protocol: nothing cyclic is left
            if linger:  # from this reader, which ends now: nobody else reads the socket
                self.transport.linger_close(reason.reason_code)
            else:
                self.transport.close(reason.reason_code)

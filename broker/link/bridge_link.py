"""`BridgeLink`: one connection of a bridge to its remote broker, after CONNACK.

It is the `Peer` of the bridge's local session (core/bridge_session.py): what the session
puts (a QoS 0 PUBLISH as bytes, a QoS 1/2 `Delivery`, a `PubRel`) is written to the remote by
one writer greenlet, the topic rewritten by the `out` lines; the remote's acknowledgements
move the session's window. What the remote publishes is mapped back by the `in` lines and
published through the router like any client's publish, its origin the bridge's session (so
the session's no-local subscriptions never send it back), and acknowledged only once what it
wrote is durable: a `WaitDurable` in the write queue holds back the PUBACK/PUBREC (and
everything after it, so acknowledgements keep their order [MQTT-4.6.0-2]).

Everything here runs in the link's two greenlets; the session's `put` never yields.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import gevent
from gevent.event import Event

from ..codec import (
    MQTT_5,
    ConnAck,
    Disconnect,
    FrameDecoder,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    SubOptions,
    Subscribe,
    encode,
)
from ..config.bridge_topics import BridgeTopic
from ..config.schema import BridgeSection
from ..core.bridge_session import to_local, to_remote
from ..core.context import BrokerContext
from ..core.delivery import Delivery
from ..core.message import Message
from ..core.session import Session, WaitDurable
from ..errors import MQTTError, StoreUnavailable

log = logging.getLogger("greenfly.bridge")

_HOP_PROPERTIES = ("topic_alias", "subscription_identifier")


class LinkClosed(Exception):
    """The link ended; the message says why (for the log)."""


class BridgeLink:
    """The live link; `run()` returns why it ended."""

    def __init__(self, ctx: BrokerContext, config: BridgeSection, session: Session,
                 sock: socket.socket, decoder: FrameDecoder, level: int) -> None:
        self.ctx = ctx
        self.config = config
        self.name = config.name
        self.session = session
        self.sock = sock
        self.decoder = decoder
        self.level = level  # the remote's MQTT level
        self.lines: tuple[BridgeTopic, ...] = config.topic
        self._items: deque[Any] = deque()
        self._pending_bytes = 0
        self._wake = Event()
        self._closed: str | None = None
        self._done = Event()
        self._last_sent = self._last_read = time.monotonic()

    # -- the session's Peer ----------------------------------------------------------------

    @property
    def protocol_level(self) -> int:
        return 4  # what the session lays deliveries out for; the link re-encodes them

    def put(self, item: Any) -> None:
        self._items.append(item)
        if isinstance(item, bytes):
            self._pending_bytes += len(item)
        self._wake.set()

    def offer(self, data: bytes) -> bool:
        """A QoS 0 delivery's bytes, unless `max_outbox_bytes` wait already (then dropped)."""
        maximum = self.ctx.config.limits.max_outbox_bytes
        if maximum and self._pending_bytes > maximum:
            return False
        self.put(data)
        return True

    def terminate(self, reason: Any) -> None:
        self.close(f"closed by the broker ({reason})")

    def produce(self, feed: Callable[[int], bool]) -> None:
        feed(1 << 20)  # no retained feeds: the session subscribes outside the protocol

    # -- life --------------------------------------------------------------------------------

    def close(self, why: str) -> None:
        if self._closed is None:
            self._closed = why
            self._wake.set()
            with contextlib.suppress(OSError):
                self.sock.close()
            self._done.set()

    def run(self) -> str:
        """Subscribe to the `in` lines, attach to the session (which resends what is in
        flight, then what is queued), and serve until the link ends; returns why."""
        subscriptions = tuple(
            (line.remote_filter,
             SubOptions(line.qos, self.level >= MQTT_5, self.level >= MQTT_5, 0))
            for line in self.lines if line.incoming)
        if subscriptions:
            # An id apart from those in flight (the remote may check it against them)
            self.put(Subscribe(self.session._allocate_packet_id() or 1, subscriptions))
        self.session.attach(self)
        workers = [gevent.spawn(self._reader), gevent.spawn(self._writer),
                   gevent.spawn(self._pinger)]
        try:
            self._done.wait()
        finally:  # also when the bridge's greenlet is killed (stop, reload)
            self.close("the bridge stops")
            gevent.killall(workers, block=False)
            self.session.detach(self)
        return self._closed or "closed"

    # -- writing -----------------------------------------------------------------------------

    def _writer(self) -> None:
        try:
            while self._closed is None:
                self._wake.wait()
                self._wake.clear()
                chunk: list[bytes] = []
                while self._items:
                    item = self._items.popleft()
                    if isinstance(item, WaitDurable):
                        self._send(chunk)
                        chunk = []
                        self.ctx.store.wait_durable(item.seq)  # StoreUnavailable: no ack
                        continue
                    data = self._wire(item)
                    if data is not None:
                        chunk.append(data)
                    if isinstance(item, bytes):
                        self._pending_bytes -= len(item)
                self._send(chunk)
        except StoreUnavailable as exc:
            self.close(f"{exc}: the remote's messages stay unacknowledged")
        except OSError as exc:
            self.close(f"write failed: {exc}")

    def _send(self, chunk: list[bytes]) -> None:
        if chunk and self._closed is None:
            self.sock.sendall(b"".join(chunk))
            self._last_sent = time.monotonic()

    def _wire(self, item: Any) -> bytes | None:
        """The bytes for the remote: a delivery's topic rewritten by the `out` lines."""
        if isinstance(item, Delivery):
            return self._publish(item.message, item.qos, item.retain, item.dup,
                                 item.packet_id)
        if isinstance(item, bytes):  # a QoS 0 PUBLISH laid out at level 4
            decoder = FrameDecoder(server_side=False)
            decoder.feed(item)
            packet = decoder.next_packet()
            assert isinstance(packet, Publish)
            message = Message(packet.topic, packet.payload, 0, packet.retain)
            return self._publish(message, 0, packet.retain, False, 0)
        return encode(item, self.level)

    def _publish(self, message: Message, qos: int, retain: bool, dup: bool,
                 packet_id: int) -> bytes | None:
        topic = to_remote(self.lines, message.topic)
        if topic is None:
            # Owed under a topic line since removed: done with, as if the remote had it.
            log.warning("bridge %s: no out line maps %r any more; not forwarded", self.name,
                        message.topic)
            if qos == 1:
                self.session.on_puback(packet_id)
            elif qos == 2:
                self.session.abandon(packet_id)
            return None
        properties: Mapping[str, Any] = {}
        if self.level >= MQTT_5 and message.properties:
            properties = dict(message.properties)
            if message.expires_at:
                left = max(1, int(message.expires_at - time.time()))
                properties["message_expiry_interval"] = left
        stats = self.ctx.stats
        stats.publish_sent += 1
        stats.publish_bytes_sent += len(message.payload)
        return encode(Publish(topic, message.payload, qos, retain, dup, packet_id, properties),
                      self.level)

    def _pinger(self) -> None:
        """PINGREQ when nothing was sent for a keepalive; the link is dead when the remote
        said nothing for 1.5 keepalives."""
        keepalive = self.config.keepalive
        while self._closed is None:
            gevent.sleep(min(1.0, keepalive / 4))
            now = time.monotonic()
            if now - self._last_read > keepalive * 1.5:
                self.close(f"the remote said nothing for {keepalive * 1.5:g} s")
            elif now - self._last_sent >= keepalive * 0.75:
                self._last_sent = now
                self.put(PingReq())

    # -- reading -----------------------------------------------------------------------------

    def _reader(self) -> None:
        try:
            while self._closed is None:
                # What came with the CONNACK first, then each read
                while self._closed is None:
                    packet = self.decoder.next_packet()
                    if packet is None:
                        break
                    self._handle(packet)
                data = self.sock.recv(65536)
                if not data:
                    self.close("the remote closed the connection")
                    return
                self._last_read = time.monotonic()
                self.decoder.feed(data)
        except OSError as exc:
            self.close(f"read failed: {exc}")
        except MQTTError as exc:
            self.close(f"the remote broke the protocol: {exc}")

    def _handle(self, packet: Any) -> None:
        session = self.session
        if isinstance(packet, Publish):
            self._incoming(packet)
        elif isinstance(packet, PubAck):
            session.on_puback(packet.packet_id)
        elif isinstance(packet, PubRec):
            if packet.reason_code >= 0x80:
                session.abandon(packet.packet_id)
            else:
                session.on_pubrec(packet.packet_id)
        elif isinstance(packet, PubComp):
            session.on_pubcomp(packet.packet_id)
        elif isinstance(packet, PubRel):
            since = self.ctx.store.seq
            session.release_qos2(packet.packet_id)
            self._ack(since, PubComp(packet.packet_id))
        elif isinstance(packet, SubAck):
            refused = [line.remote_filter for line, code
                       in zip([x for x in self.lines if x.incoming], packet.reason_codes,
                                  strict=False)
                       if code >= 0x80]
            if refused:
                log.warning("bridge %s: the remote refused the subscription(s) %s", self.name,
                            ", ".join(refused))
        elif isinstance(packet, Disconnect):
            self.close(f"the remote sent DISCONNECT (reason 0x{packet.reason_code:02X})")
        elif not isinstance(packet, (PingResp, ConnAck)):
            log.debug("bridge %s: ignored %s from the remote", self.name, type(packet).__name__)

    def _incoming(self, packet: Publish) -> None:
        """A remote message: published here, acknowledged once what it wrote is durable."""
        ctx = self.ctx
        stats = ctx.stats
        stats.publish_received += 1
        stats.publish_bytes_received += len(packet.payload)
        topic = to_local(self.lines, packet.topic)
        qos = packet.qos
        properties = packet.properties
        if properties and any(key in properties for key in _HOP_PROPERTIES):
            properties = {k: v for k, v in properties.items() if k not in _HOP_PROPERTIES}
        message = None
        if topic is None:
            log.debug("bridge %s: no in line maps remote topic %r; dropped", self.name,
                      packet.topic)
        elif topic.startswith("$SYS") and not any(line.local_filter.startswith("$SYS")
                                                  for line in self.lines):
            pass  # $SYS crosses only where a topic line names it
        else:
            message = Message(topic, packet.payload, qos, packet.retain, properties,
                              self.session.client_id)
        if qos == 0:
            if message is not None:
                ctx.router.publish(message)
            return
        store = ctx.store
        if store.failure is not None:
            self.close(f"a QoS {qos} message from the remote cannot be made durable "
                       f"({store.failure}): left unacknowledged")
            return
        since = store.seq
        if qos == 1:
            if message is not None:
                ctx.router.publish(message)
            self._ack(since, PubAck(packet.packet_id))
            return
        if self.session.receive_qos2(packet.packet_id) and message is not None:
            ctx.router.publish(message)  # [MQTT-4.3.3-2]: a resend before PUBREL is not
        self._ack(since, PubRec(packet.packet_id))

    def _ack(self, since: int, ack: Any) -> None:
        store = self.ctx.store
        if store.seq > since and not store.is_durable(store.seq):
            self.put(WaitDurable(store.seq))
        self.put(ack)  # behind every earlier ack, in the order received [MQTT-4.6.0-2]

"""Clients for tests: a raw-socket client (exact bytes) and a thin synchronous paho wrapper."""

from __future__ import annotations

import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from broker.codec import Connect, FrameDecoder, SubOptions, Subscribe, encode

TIMEOUT = 5.0


def take(source: queue.Queue[Any], n: int, timeout: float = TIMEOUT) -> list[Any]:
    """Up to `n` items from `source`, waiting at most `timeout` in all: fewer means the rest
    did not come in time (the caller says what was missing)."""
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        try:
            out.append(source.get(timeout=max(0.001, deadline - time.monotonic())))
        except queue.Empty:
            break
    return out


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class RawClient:
    """A TCP socket speaking MQTT bytes; packets read back with the client-side decoder."""

    def __init__(self, port: int, host: str = "127.0.0.1", protocol_level: int = 4,
                 source: str | None = None, rcvbuf: int = 0) -> None:
        """`source`: the local address to connect from (127.0.0.2, say: a client whose
        address differs from a proxy's 127.0.0.1). `rcvbuf`: a receive buffer this small
        (bytes) before connecting, so a client that stops reading leaves what the broker
        sends in the broker, not in the kernel."""
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(TIMEOUT)
        if source:
            self.sock.bind((source, 0))
        self.sock.connect((host, port))
        self.decoder = FrameDecoder(server_side=False, protocol_level=protocol_level)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_packet(self, packet: Any, level: int = 4) -> None:
        self.sock.sendall(encode(packet, level))

    def recv_packet(self, timeout: float = TIMEOUT) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            packet = self.decoder.next_packet()
            if packet is not None:
                return packet
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no packet from the broker")
            self.sock.settimeout(remaining)
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("broker closed the connection")
            self.decoder.feed(data)

    def recv_bytes(self, n: int, timeout: float = TIMEOUT) -> bytes:
        self.sock.settimeout(timeout)
        out = b""
        while len(out) < n:
            data = self.sock.recv(n - len(out))
            if not data:
                break
            out += data
        return out

    def closed_by_broker(self, timeout: float = TIMEOUT) -> bool:
        """True when the broker closes the socket within `timeout` (any bytes before are read)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return False
            except ConnectionResetError:
                return True
            if not data:
                return True
            self.decoder.feed(data)
        return False

    def connect(self, client_id: str | None = None, clean: bool = True, keepalive: int = 60,
                **kwargs: Any) -> Any:
        self.send_packet(Connect(client_id if client_id is not None else unique(),
                                 clean_start=clean, keepalive=keepalive, **kwargs))
        return self.recv_packet()

    def subscribe(self, topic_filter: str, qos: int = 0, packet_id: int = 1) -> Any:
        self.send_packet(Subscribe(packet_id, ((topic_filter, SubOptions(qos)),)))
        return self.recv_packet()

    def close(self) -> None:
        self.sock.close()


class PahoClient:
    """paho-mqtt 2.x driven synchronously: every call waits for its acknowledgement."""

    def __init__(self, port: int, client_id: str | None = None, clean_session: bool = True,
                 keepalive: int = 60, transport: str = "tcp", host: str = "127.0.0.1",
                 will: tuple[str, bytes, int, bool] | None = None,
                 protocol: int = paho.MQTTv311, ws_path: str = "/mqtt",
                 auto_reconnect: bool = False, username: str | None = None,
                 password: str | None = None, **connect_kwargs: Any) -> None:
        self.client_id = client_id or unique("paho")
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                  clean_session=clean_session, protocol=protocol,
                                  transport=transport)
        if transport == "websockets":
            self.client.ws_set_options(path=ws_path)
        if will:
            self.client.will_set(will[0], will[1], will[2], will[3])
        if username is not None:
            self.client.username_pw_set(username, password)
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.connects: queue.Queue[tuple[bool, int]] = queue.Queue()
        self.disconnects: queue.Queue[int] = queue.Queue()
        self._subacks: dict[int, Any] = {}
        self._sub_event = threading.Condition()
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda c, u, f, rc, p: self.disconnects.put(rc)
        self.client.on_subscribe = self._on_subscribe
        self.host, self.port, self.keepalive = host, port, keepalive
        self.auto_reconnect = auto_reconnect
        self.connect_kwargs = connect_kwargs

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.connects.put((bool(flags.session_present), int(getattr(rc, "value", rc))))

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        with self._sub_event:
            self._subacks[mid] = [int(getattr(c, "value", c)) for c in codes]
            self._sub_event.notify_all()

    def connect(self, timeout: float = TIMEOUT) -> tuple[bool, int]:
        """Connect and wait for CONNACK: (session present, return code)."""
        self.client.connect(self.host, self.port, self.keepalive, **self.connect_kwargs)
        self.client.loop_start()
        try:
            return self.connects.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"{self.client_id}: no CONNACK") from None

    def subscribe(self, topic_filter: str, qos: int = 0, timeout: float = TIMEOUT) -> list[int]:
        _rc, mid = self.client.subscribe(topic_filter, qos)
        deadline = time.monotonic() + timeout
        with self._sub_event:
            while mid not in self._subacks:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.client_id}: no SUBACK for {topic_filter}")
                self._sub_event.wait(left)
            return self._subacks.pop(mid)

    def publish(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False,
                timeout: float = TIMEOUT) -> None:
        info = self.client.publish(topic, payload, qos, retain)
        if qos:
            info.wait_for_publish(timeout)
            if not info.is_published():
                raise TimeoutError(f"{self.client_id}: publish to {topic} not acknowledged")

    def expect(self, n: int = 1, timeout: float = TIMEOUT) -> list[paho.MQTTMessage]:
        out = take(self.messages, n, timeout)
        if len(out) < n:
            raise AssertionError(f"{self.client_id}: got {len(out)} of {n} messages: "
                                 f"{[(m.topic, m.payload) for m in out]}")
        return out

    def expect_none(self, wait: float = 0.3) -> None:
        """No (further) message arrives within `wait` seconds: for what no event can show
        (a periodic publisher that stays silent); else prefer `expect_marker`."""
        try:
            message = self.messages.get(timeout=wait)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected message {message.topic}: {message.payload!r}")

    def disconnect(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def drop(self) -> None:
        """Close the socket without DISCONNECT (a crashed client)."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()


def expect_marker(receiver: PahoClient, sender: PahoClient, topic: str, qos: int = 1) -> None:
    """Publish a marker on `topic` and check it is the next message `receiver` gets.

    The broker hands every message to a subscriber through one outbox, in order, so whatever
    it had already queued for `receiver` (a will after a clean DISCONNECT, a message an ACL
    should have stopped, a second copy) would arrive first: "nothing else came" is then shown
    by an event, not by a quiet interval that a loaded machine can make too short."""
    marker = unique("marker").encode()
    sender.publish(topic, marker, qos=qos)
    [got] = receiver.expect(1)
    assert (got.topic, got.payload) == (topic, marker), \
        f"{receiver.client_id} got {got.topic}: {got.payload!r} before the marker"


def publish_many(raw: RawClient, topic: str, payloads: list[bytes], qos: int = 1,
                 window: int = 100, first_id: int = 1, retain: bool = False) -> None:
    """Publish with up to `window` unacknowledged; return when every PUBACK has arrived."""
    from broker.codec import PubAck, Publish
    assert qos == 1
    sent = acked = 0
    while acked < len(payloads):
        batch = []
        while sent < len(payloads) and sent - acked < window:
            packet_id = (first_id + sent - 1) % 65535 + 1
            batch.append(encode(Publish(topic, payloads[sent], qos, retain, packet_id=packet_id)))
            sent += 1
        if batch:
            raw.send(b"".join(batch))
        reply = raw.recv_packet()
        assert isinstance(reply, PubAck), reply
        acked += 1


def read_packets(raw: RawClient, enough: Callable[[], bool], timeout: float,
                 linger: float = 0.0) -> Iterator[Any]:
    """The packets `raw` receives until `enough()` holds, then for `linger` seconds more;
    TimeoutError if `timeout` passes first."""
    deadline = time.monotonic() + timeout
    lingering = False
    while True:
        if enough() and not lingering:
            if linger <= 0:
                return
            deadline = min(deadline, time.monotonic() + linger)
            lingering = True
        try:
            packet = raw.recv_packet(max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            if enough():
                return
            raise
        yield packet


def receive_all(raw: RawClient, count: int, timeout: float = 20.0,
                linger: float = 0.0) -> list[Any]:
    """Read PUBLISH packets, acknowledging each (PUBACK, or PUBREC then PUBCOMP via PUBREL),
    until `count` distinct payloads arrived, then for `linger` seconds more; duplicates are
    returned too."""
    from broker.codec import PubAck, PubComp, Publish, PubRec, PubRel
    got: list[Any] = []
    distinct: set[bytes] = set()
    for packet in read_packets(raw, lambda: len(distinct) >= count, timeout, linger):
        if isinstance(packet, Publish):
            got.append(packet)
            distinct.add(packet.payload)
            if packet.qos == 1:
                raw.send_packet(PubAck(packet.packet_id))
            elif packet.qos == 2:
                raw.send_packet(PubRec(packet.packet_id))
        elif isinstance(packet, PubRel):
            raw.send_packet(PubComp(packet.packet_id))
    return got

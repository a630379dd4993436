"""paho-mqtt 2 speaking MQTT 5, driven synchronously: every call waits (with a timeout) for
the packet that answers it, and hands back what the client saw (reason codes, properties).

`PahoClient` in clients.py is the 3.1.1 wrapper (its clean session has no meaning in 5.0);
this one takes properties by paho's names (`SessionExpiryInterval=300`, `UserProperty=[...]`).
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from support.clients import TIMEOUT, take, unique


def properties(packet_type: int, **values: Any) -> Properties | None:
    """paho `Properties` for one packet type from keyword values, or None when empty."""
    if not values:
        return None
    props = Properties(packet_type)
    for name, value in values.items():
        setattr(props, name, value)
    return props


def code(value: Any) -> int:
    """A paho reason code (or plain int) as an int."""
    return int(value.value) if isinstance(value, ReasonCode) else int(value)


class Paho5:
    """One paho-mqtt client with protocol MQTTv5 and its network loop in a thread."""

    def __init__(self, port: int, client_id: str | None = None, *, host: str = "127.0.0.1",
                 keepalive: int = 60, transport: str = "tcp", ws_path: str = "/mqtt") -> None:
        self.client_id = unique("paho5") if client_id is None else client_id
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                  protocol=paho.MQTTv5, transport=transport)
        if transport == "websockets":
            self.client.ws_set_options(path=ws_path)
        self.host, self.port, self.keepalive = host, port, keepalive
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.connacks: queue.Queue[tuple[bool, int, Properties | None]] = queue.Queue()
        self.disconnects: queue.Queue[tuple[int, Properties | None]] = queue.Queue()
        self.connack: tuple[bool, int, Properties | None] | None = None  # the latest
        self._acks: dict[int, Any] = {}
        self._cond = threading.Condition()
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda c, u, f, rc, p: self.disconnects.put((code(rc), p))
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._ack(mid, [code(r) for r in rcs])
        self.client.on_unsubscribe = lambda c, u, mid, rcs, p: self._ack(
            mid, [code(r) for r in rcs])
        self.client.on_publish = lambda c, u, mid, rc, p: self._ack(mid, code(rc))

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.connacks.put((bool(flags.session_present), code(rc), props))

    def _ack(self, mid: int, value: Any) -> None:
        with self._cond:
            self._acks[mid] = value
            self._cond.notify_all()

    def _wait_ack(self, mid: int | None, what: str, timeout: float) -> Any:
        assert mid is not None, f"{self.client_id}: {what} was not sent"
        deadline = time.monotonic() + timeout
        with self._cond:
            while mid not in self._acks:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.client_id}: no answer to {what}")
                self._cond.wait(left)
            return self._acks.pop(mid)

    # -- the calls ------------------------------------------------------------------------------

    def will_set(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                 **props: Any) -> None:
        self.client.will_set(topic, payload, qos, retain,
                             properties(PacketTypes.WILLMESSAGE, **props))

    def connect(self, clean_start: bool = True, timeout: float = TIMEOUT,
                **props: Any) -> tuple[bool, int, Properties | None]:
        """CONNECT with these properties; (session present, reason code, CONNACK properties)."""
        self.client.connect(self.host, self.port, self.keepalive, clean_start=clean_start,
                            properties=properties(PacketTypes.CONNECT, **props))
        self.client.loop_start()
        try:
            self.connack = self.connacks.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id}: no CONNACK") from None
        return self.connack

    def subscribe(self, topic_filter: str, qos: int = 0, timeout: float = TIMEOUT,
                  **options: Any) -> list[int]:
        """SUBACK's reason codes; `options` are paho's SubscribeOptions (noLocal=True, ...)."""
        _rc, mid = self.client.subscribe(topic_filter, options=SubscribeOptions(qos, **options))
        return self._wait_ack(mid, f"SUBSCRIBE {topic_filter}", timeout)

    def unsubscribe(self, topic_filter: str, timeout: float = TIMEOUT) -> list[int]:
        _rc, mid = self.client.unsubscribe(topic_filter)
        return self._wait_ack(mid, f"UNSUBSCRIBE {topic_filter}", timeout)

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                timeout: float = TIMEOUT, **props: Any) -> int:
        """Publish; for QoS 1/2 wait for PUBACK/PUBCOMP and return its reason code."""
        info = self.client.publish(topic, payload, qos, retain,
                                   properties(PacketTypes.PUBLISH, **props))
        if qos == 0:
            return 0
        return self._wait_ack(info.mid, f"PUBLISH {topic}", timeout)

    def expect(self, n: int = 1, timeout: float = TIMEOUT) -> list[paho.MQTTMessage]:
        out = take(self.messages, n, timeout)
        if len(out) < n:
            raise AssertionError(f"{self.client_id}: got {len(out)} of {n} messages: "
                                 f"{[(m.topic, m.payload) for m in out]}")
        return out

    def next_disconnect(self, timeout: float = TIMEOUT) -> tuple[int, Properties | None]:
        try:
            return self.disconnects.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id}: still connected") from None

    def disconnect(self, reason: int = 0, **props: Any) -> None:
        self.client.disconnect(ReasonCode(PacketTypes.DISCONNECT, identifier=reason),
                               properties(PacketTypes.DISCONNECT, **props))
        self.client.loop_stop()

    def drop(self) -> None:
        """Close the socket without DISCONNECT, as a crashed client or a cut network does."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()

    def close(self) -> None:
        """Best effort at the end of a test: DISCONNECT if still connected, stop the loop."""
        if self.client.is_connected():
            self.client.disconnect()
        self.client.loop_stop()

"""MQTT.js 5.x (the browser dashboards' client, here under Node.js) against greenfly over ws://.

`tests/js/mqttjs-driver.js` runs one MQTT.js client per process and takes JSON commands on
stdin; `MqttJs` below sends them and waits, with timeouts, for the JSON events it prints.
`make test` installs MQTT.js into tests/js (tests/setup/install-test-deps.sh).
"""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from support.broker import BrokerProcess
from support.clients import TIMEOUT, PahoClient, unique

JS_DIR = Path(__file__).resolve().parents[1] / "js"
DRIVER = JS_DIR / "mqttjs-driver.js"


def node_ready() -> str:
    node = shutil.which("node")
    if node is None or not (JS_DIR / "node_modules" / "mqtt" / "package.json").exists():
        pytest.fail("Node.js and MQTT.js are needed: run tests/setup/install-test-deps.sh")
    return node


class MqttJs:
    """One MQTT.js client in a Node.js process, driven synchronously."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([node_ready(), str(DRIVER)], cwd=JS_DIR, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self.errors: list[str] = []
        self._next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = json.loads(line)
            if event["event"] == "message":
                event["payload"] = bytes.fromhex(event["payload"])
                self.messages.put(event)
            else:
                if event["event"] == "error":
                    self.errors.append(event["message"])
                self.events.put(event)

    def call(self, op: str, timeout: float = TIMEOUT, **fields: Any) -> dict[str, Any]:
        self._next_id += 1
        command = {"op": op, "id": self._next_id, **fields}
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = self.events.get(timeout=max(0.001, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"MQTT.js: no answer to {command}; errors: "
                                     f"{self.errors}; stderr: {self._stderr()}") from None
            if event.get("id") == self._next_id:
                assert "error" not in event, f"MQTT.js: {op} failed: {event['error']}"
                return event

    def _stderr(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def connect(self, port: int, path: str = "/mqtt", **options: Any) -> dict[str, Any]:
        return self.call("connect", url=f"ws://127.0.0.1:{port}{path}", options=options)

    def subscribe(self, topic: str, qos: int = 0) -> list[int]:
        return self.call("subscribe", topic=topic, qos=qos)["granted"]

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        self.call("publish", topic=topic, payload=payload.hex(), qos=qos, retain=retain)

    def end(self) -> None:
        self.call("end")

    def expect(self, n: int, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            try:
                out.append(self.messages.get(timeout=max(0.001, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"MQTT.js got {len(out)} of {n} messages: {out}; "
                                     f"errors: {self.errors}") from None
        return out

    def kill(self) -> None:
        """SIGKILL the Node.js process: its socket closes with no DISCONNECT, no close frame."""
        self.proc.kill()
        self.proc.wait(5)

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="module")
def wsbroker(tmp_path_factory: pytest.TempPathFactory):
    proc = BrokerProcess(tmp_path_factory.mktemp("ws-mqttjs"), websockets=True).start()
    yield proc
    proc.stop()


@pytest.fixture
def mqttjs():
    clients: list[MqttJs] = []

    def make() -> MqttJs:
        clients.append(MqttJs())
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def tcp_client(broker: BrokerProcess) -> PahoClient:
    client = PahoClient(broker.port)
    client.connect()
    return client


def test_mina_gets_three_qos1_messages_sent_while_away_and_session_present(wsbroker, mqttjs):
    # The scenario, verbatim: mqtt.connect('ws://host:9001/mqtt', {clientId: 'mina/1',
    # clean: false, keepalive: 30}), subscribe {qos: 1}, publish {qos: 1}; away; back.
    topic = "dashboard/mina/alerts"
    mina = mqttjs()
    first = mina.connect(wsbroker.ws_port, clientId="mina/1", clean=False, keepalive=30)
    assert first["returnCode"] == 0
    assert mina.subscribe(topic, qos=1) == [1]
    mina.publish(topic, b"hello from mina", qos=1)
    assert mina.expect(1)[0]["payload"] == b"hello from mina"
    mina.end()

    publisher = tcp_client(wsbroker)
    for i in range(3):
        publisher.publish(topic, f"while away {i}".encode(), qos=1)
    publisher.disconnect()

    again = mqttjs()
    connack = again.connect(wsbroker.ws_port, clientId="mina/1", clean=False, keepalive=30)
    assert connack["sessionPresent"] is True
    messages = again.expect(3)
    assert [m["payload"] for m in messages] == [f"while away {i}".encode() for i in range(3)]
    assert all(m["qos"] == 1 for m in messages)
    again.end()


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_round_trip_at_each_qos(wsbroker, mqttjs, qos):
    topic = unique(f"js/qos{qos}")
    client = mqttjs()
    client.connect(wsbroker.ws_port, clientId=unique("js"))
    assert client.subscribe(topic, qos=qos) == [qos]
    client.publish(topic, b"round trip \x00\xff", qos=qos)
    [message] = client.expect(1)
    assert message["payload"] == b"round trip \x00\xff" and message["qos"] == qos
    client.end()


def test_retained_message_reaches_a_later_subscriber_with_retain_set(wsbroker, mqttjs):
    topic = unique("js/retained")
    publisher = mqttjs()
    publisher.connect(wsbroker.ws_port, clientId=unique("js-pub"))
    publisher.publish(topic, b"last known value", qos=1, retain=True)
    publisher.end()
    late = mqttjs()
    late.connect(wsbroker.ws_port, clientId=unique("js-late"))
    late.subscribe(topic, qos=1)
    [message] = late.expect(1)
    assert message["payload"] == b"last known value" and message["retain"] is True
    late.end()


def test_will_is_published_when_the_mqttjs_process_is_killed(wsbroker, mqttjs):
    topic = unique("js/will")
    watcher = tcp_client(wsbroker)
    watcher.subscribe(topic, 1)
    doomed = mqttjs()
    doomed.connect(wsbroker.ws_port, clientId=unique("js-doomed"), keepalive=30,
                   will={"topic": topic, "payload": "offline", "qos": 1, "retain": False})
    doomed.kill()
    [message] = watcher.expect(1)
    assert message.payload == b"offline"
    watcher.disconnect()


def test_mqtt_3_1_client_offering_mqttv3_1_is_served(wsbroker, mqttjs):
    topic = unique("js/v31")
    client = mqttjs()
    client.connect(wsbroker.ws_port, clientId=unique("js31"), protocolId="MQIsdp",
                   protocolVersion=3)
    client.subscribe(topic, qos=1)
    client.publish(topic, b"3.1", qos=1)
    assert client.expect(1)[0]["payload"] == b"3.1"
    client.end()


def test_will_is_not_published_after_a_clean_end(wsbroker, mqttjs):
    topic = unique("js/no-will")
    watcher = tcp_client(wsbroker)
    watcher.subscribe(topic, 1)
    client = mqttjs()
    client_id = unique("js-polite")
    client.connect(wsbroker.ws_port, clientId=client_id,
                   will={"topic": topic, "payload": "offline", "qos": 1, "retain": False})
    client.end()
    wsbroker.wait_for_log(rf"client disconnected: {client_id} .*reason=client DISCONNECT")
    watcher.expect_none(0.5)
    watcher.disconnect()

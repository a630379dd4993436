"""MQTT.js 5.x (the browser dashboards' client) under Node.js, driven from tests.

`tests/js/mqttjs-driver.js` runs one MQTT.js client per process and takes JSON commands on
stdin; `MqttJs` sends them and waits, with timeouts, for the JSON events it prints. `make
test` installs MQTT.js into tests/js (tests/setup/install-test-deps.sh).
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

from support.clients import TIMEOUT, take

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

    def call(self, op: str, timeout: float = TIMEOUT, check: bool = True,
             **fields: Any) -> dict[str, Any]:
        """Send one command and return its answer; `check=False` returns a failed answer
        (with "error" and, for an MQTT 5 refusal, "code") instead of failing the test."""
        command = self.send(op, **fields)
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = self.events.get(timeout=max(0.001, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"MQTT.js: no answer to {command}; errors: "
                                     f"{self.errors}; stderr: {self._stderr()}") from None
            if event.get("id") == self._next_id:
                if check:
                    assert "error" not in event, f"MQTT.js: {op} failed: {event['error']}"
                return event

    def send(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one command without waiting for its answer (a refused connect answers with
        an "error" event only: see `next_event`); the command sent."""
        self._next_id += 1
        command = {"op": op, "id": self._next_id, **fields}
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return command

    def _stderr(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def connect(self, port: int, path: str = "/mqtt", **options: Any) -> dict[str, Any]:
        return self.call("connect", url=f"ws://127.0.0.1:{port}{path}", options=options)

    def subscribe(self, topic: str, qos: int = 0, **options: Any) -> list[int]:
        """SUBACK's granted QoS (MQTT 5: reason codes); v5 options: nl, rap, rh, properties."""
        return self.call("subscribe", topic=topic, qos=qos, options=options)["granted"]

    def unsubscribe(self, topic: str) -> list[int]:
        """UNSUBACK's reason codes (MQTT 5; empty for 3.1.1)."""
        return self.call("unsubscribe", topic=topic)["reasonCodes"]

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                check: bool = True, **properties: Any) -> dict[str, Any]:
        """Publish and wait for PUBACK/PUBCOMP; MQTT 5 `properties` by MQTT.js's names
        (userProperties, responseTopic, correlationData={"hex": ...}, ...)."""
        fields: dict[str, Any] = {"topic": topic, "payload": payload.hex(), "qos": qos,
                                  "retain": retain}
        if properties:
            fields["properties"] = properties
        return self.call("publish", check=check, **fields)

    def next_event(self, kind: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next unprompted event of one kind ("disconnect", "close", "error")."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = self.events.get(timeout=max(0.001, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"MQTT.js: no {kind} event; errors: {self.errors}") \
                    from None
            if event["event"] == kind:
                return event

    def end(self) -> None:
        self.call("end")

    def expect(self, n: int, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
        out = take(self.messages, n, timeout)
        if len(out) < n:
            raise AssertionError(f"MQTT.js got {len(out)} of {n} messages: {out}; "
                                 f"errors: {self.errors}")
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

    def connect_url(self, url: str, **options: Any) -> dict[str, Any]:
        """Connect to any URL (wss:// with `ca` in the options, for instance)."""
        return self.call("connect", url=url, options=options)


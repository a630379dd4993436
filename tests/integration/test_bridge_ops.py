"""What an operator sees of the bridges and can change while they run: their state in
`/metrics` and `GET /api/v1/bridges` following a real mosquitto going away, and a SIGHUP
reload that reconnects only the bridge whose section changed."""

from __future__ import annotations

import signal
import time
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from support.bridges import bridge_config
from support.clients import PahoClient
from support.http import HTTP_LISTENER, request


def _bridge_metrics(port: int) -> dict[tuple[str, str], float]:
    text = request(f"http://127.0.0.1:{port}/metrics").text
    return {(sample.name, sample.labels.get("bridge", "")): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name.startswith("greenfly_bridge_")}


def _api_bridge(port: int, name: str) -> dict[str, Any]:
    reply = request(f"http://127.0.0.1:{port}/api/v1/bridges")
    assert reply.status == 200
    [item] = [item for item in reply.json()["items"] if item["name"] == name]
    return item


def _poll(check, timeout: float = 10.0) -> Any:
    """Calls `check` until it returns something true (bounded): the state is reached."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_bridge_state_in_metrics_and_admin_api_follows_the_remote(broker_factory, mosquitto):
    remote = mosquitto()
    greenfly = broker_factory(HTTP_LISTENER + bridge_config("cloud", remote.port, ["s/# out 1"]))
    http = greenfly.port_of("http")
    greenfly.wait_for_log(r"bridge cloud: connected to", timeout=15)
    assert _poll(lambda: _bridge_metrics(http)[("greenfly_bridge_up", "cloud")] == 1)
    values = _bridge_metrics(http)
    assert values[("greenfly_bridge_queued_messages", "cloud")] == 0
    assert values[("greenfly_bridge_connects_total", "cloud")] == 1
    item = _api_bridge(http, "cloud")
    assert item["state"] == "connected"
    assert item["address"] == f"127.0.0.1:{remote.port}"
    assert item["since"].endswith("+00:00")
    assert (item["queued"], item["inflight"]) == (0, 0)

    remote.stop()  # SIGTERM to its PID
    assert _poll(lambda: _bridge_metrics(http)[("greenfly_bridge_up", "cloud")] == 0)
    item = _api_bridge(http, "cloud")
    assert (item["state"], item["address"]) == ("reconnecting", None)
    near = PahoClient(greenfly.port)
    near.connect()
    for i in range(3):
        near.publish("s/x", b"%d" % i, qos=1)
    near.disconnect()
    assert _poll(lambda: _bridge_metrics(http)[("greenfly_bridge_queued_messages",
                                                  "cloud")] == 3)
    assert _api_bridge(http, "cloud")["queued"] + _api_bridge(http, "cloud")["inflight"] == 3
    remote.start()
    assert _poll(lambda: _bridge_metrics(http)[("greenfly_bridge_up", "cloud")] == 1, 15)
    assert _poll(lambda: _bridge_metrics(http)[("greenfly_bridge_queued_messages",
                                                  "cloud")] == 0)
    assert _bridge_metrics(http)[("greenfly_bridge_connects_total", "cloud")] == 2
    assert _api_bridge(http, "cloud")["state"] == "connected"


def test_sighup_reconnects_the_changed_bridge_only_and_applies_its_new_topics(
        broker_factory, mosquitto):
    remote = mosquitto()
    greenfly = broker_factory(bridge_config("cloud", remote.port, ["s/# out 1 house/ a/"])
                              + bridge_config("other", remote.port, ["t/# out 1"]))
    greenfly.wait_for_log(r"bridge cloud: connected to", timeout=15)
    greenfly.wait_for_log(r"bridge other: connected to", timeout=15)
    far = PahoClient(remote.port)
    far.connect()
    far.subscribe("#", 1)
    near = PahoClient(greenfly.port)
    near.connect()
    near.publish("house/s/x", b"before", qos=1)
    [got] = far.expect(1)
    assert (got.topic, got.payload) == ("a/s/x", b"before")

    text = greenfly.config_path.read_text()
    greenfly.config_path.write_text(text.replace('"s/# out 1 house/ a/"',
                                                 '"r/# out 1 house/ b/"'))
    greenfly.mark_log()
    reload_at = len(greenfly.log_text())
    greenfly.signal(signal.SIGHUP)
    greenfly.wait_for_log(r"SIGHUP: configuration reloaded")
    greenfly.wait_for_log(r"bridge cloud: changed by the reload")
    greenfly.wait_for_log(r"bridge cloud: connected to", timeout=15)
    # The new line alone: house/s/ no longer crosses, house/r/ does, under the new prefix
    near.publish("house/s/x", b"old line", qos=1)
    near.publish("house/r/x", b"new line", qos=1)
    near.publish("t/y", b"unchanged", qos=1)
    got = sorted((m.topic, m.payload) for m in far.expect(2))
    assert got == [("b/r/x", b"new line"), ("t/y", b"unchanged")]
    # Had the old line stayed, its message would come before this one (one bridge, in order)
    near.publish("house/r/end", b"end", qos=1)
    [got] = far.expect(1)
    assert (got.topic, got.payload) == ("b/r/end", b"end")
    assert "bridge other:" not in greenfly.log_text()[reload_at:]
    far.disconnect()
    near.disconnect()

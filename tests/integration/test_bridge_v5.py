"""Bridges speaking MQTT 5 (`protocol_version = "mqttv5"`) to Debian's mosquitto and to a
second greenfly: out and in at QoS 1, and No Local on the bridge's subscriptions keeping two
greenflies bridged `both` from looping."""

from __future__ import annotations

import time

import pytest
from support.bridges import assert_no_loop, bridge_config
from support.clients import PahoClient

V5 = 'protocol_version = "mqttv5"\n'


def _until_crossed(sender: PahoClient, receiver: PahoClient, topic: str) -> None:
    """The bridge's SUBSCRIBE may still be on its way right after CONNACK: publish until one
    crosses (bounded), then drain what crossed."""
    deadline = time.monotonic() + 10
    while receiver.messages.empty() and time.monotonic() < deadline:
        sender.publish(topic, b"warmup", qos=1)
        time.sleep(0.1)
    assert not receiver.messages.empty(), "nothing crossed the bridge"


def test_v5_bridge_to_mosquitto_out_and_in_at_qos_1(broker_factory, mosquitto):
    remote = mosquitto()
    greenfly = broker_factory(bridge_config("cloud", remote.port, [
        "sensors/# out 1 house/ site-a/", "cmd/# in 1 local/ remote/"], V5))
    greenfly.wait_for_log(r"bridge cloud: connected to \S+ \(MQTT 5\)", timeout=15)
    assert " (p5, c0, " in remote.log_path.read_text()  # mosquitto saw an MQTT 5 CONNECT
    far = PahoClient(remote.port)
    far.connect()
    far.subscribe("site-a/#", 1)
    near = PahoClient(greenfly.port)
    near.connect()
    near.subscribe("local/#", 1)
    near.publish("house/sensors/t1", b"21.5", qos=1)
    [got] = far.expect(1)
    assert (got.topic, got.payload, got.qos) == ("site-a/sensors/t1", b"21.5", 1)
    _until_crossed(far, near, "remote/cmd/warm")
    while not near.messages.empty():
        near.messages.get()
    far.publish("remote/cmd/go", b"now", qos=1)
    [got] = near.expect(1)
    assert (got.topic, got.payload, got.qos) == ("local/cmd/go", b"now", 1)
    far.disconnect()
    near.disconnect()


def test_two_greenflies_bridged_both_over_v5_do_not_loop(broker_factory):
    left = broker_factory()
    right = broker_factory(bridge_config("left", left.port, ["a/# both 1"], V5))
    right.wait_for_log(r"bridge left: connected to \S+ \(MQTT 5\)", timeout=15)
    on_left = PahoClient(left.port)
    on_left.connect()
    on_left.subscribe("a/#", 1)
    on_right = PahoClient(right.port)
    on_right.connect()
    on_right.subscribe("a/#", 1)
    _until_crossed(on_left, on_right, "a/warmup")
    # Drain: the warm-ups and anything a loop might already be circulating; then each marker
    # must be the next (and only) message on both sides
    on_left.publish("a/drained", b"d", qos=1)
    for client in (on_left, on_right):
        while client.expect(1)[0].topic != "a/drained":
            pass
    assert_no_loop(on_left, on_right)
    on_left.disconnect()
    on_right.disconnect()



@pytest.mark.parametrize("qos", [1, 2])
def test_v5_bridge_keeps_to_the_remotes_receive_maximum(broker_factory, mosquitto, qos):
    # mosquitto announces max_inflight_messages as its Receive Maximum
    remote = mosquitto("max_inflight_messages 2\n")
    greenfly = broker_factory(bridge_config("cloud", remote.port, [f"q/# out {qos}"], V5))
    greenfly.wait_for_log(r"bridge cloud: connected to \S+ \(MQTT 5\)", timeout=15)
    far = PahoClient(remote.port)
    far.connect()
    far.subscribe("q/#", qos)
    mark = len(greenfly.log_text())
    near = PahoClient(greenfly.port)
    near.connect()
    payloads = [f"m{i:03d}".encode() for i in range(100)]
    for payload in payloads:  # a burst: paho does not wait for each acknowledgement
        near.client.publish("q/x", payload, qos=qos)
    got = far.expect(100, timeout=30)
    assert [m.payload for m in got] == payloads
    assert "bridge cloud: link to" not in greenfly.log_text()[mark:]
    far.disconnect()
    near.disconnect()

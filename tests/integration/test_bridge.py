"""Bridges against a real Debian mosquitto on loopback and against a second greenfly: topics
rewritten both ways at every QoS, nothing lost across an outage and a kill -9, no loop
between two greenflies, TLS with a test CA, a refused login retried with growing waits."""

from __future__ import annotations

import re
import subprocess
import time

import pytest
from support.bridges import assert_no_loop, bridge_config
from support.clients import PahoClient, RawClient, publish_many
from support.tls import make_certificates


def _connected(greenfly, name: str = "cloud") -> None:
    greenfly.wait_for_log(rf"bridge {name}: connected to", timeout=15)


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_out_and_in_rewrite_prefixes_at_each_qos(broker_factory, mosquitto, qos):
    remote = mosquitto()
    greenfly = broker_factory(bridge_config("cloud", remote.port, [
        f"sensors/# out {qos} house/ site-a/", f"cmd/# in {qos} local/ remote/"]))
    _connected(greenfly)
    far = PahoClient(remote.port)
    far.connect()
    far.subscribe("site-a/#", qos)
    near = PahoClient(greenfly.port)
    near.connect()
    near.subscribe("local/#", qos)
    # out: published here under house/, read there under site-a/
    near.publish("house/sensors/t1", b"21.5", qos=qos)
    [got] = far.expect(1)
    assert (got.topic, got.payload, got.qos) == ("site-a/sensors/t1", b"21.5", qos)
    # in: published there under remote/, read here under local/ (the SUBSCRIBE to the remote
    # may still be on its way right after CONNACK: publish until the first one arrives)
    deadline = time.monotonic() + 10
    while near.messages.empty() and time.monotonic() < deadline:
        far.publish("remote/cmd/go", b"now", qos=qos)
        time.sleep(0.1)
    [got] = near.expect(1)
    assert (got.topic, got.payload, got.qos) == ("local/cmd/go", b"now", qos)
    far.disconnect()
    near.disconnect()


def test_retained_crosses_as_retained_and_sys_state_is_published(broker_factory, mosquitto):
    remote = mosquitto()
    greenfly = broker_factory(bridge_config("cloud", remote.port, ["sensors/# out 1"]))
    _connected(greenfly)
    near = PahoClient(greenfly.port)
    near.connect()
    near.subscribe("$SYS/broker/connection/cloud/state", 1)
    [state] = near.expect(1)
    assert (state.payload, state.retain) == (b"1", True)
    live = PahoClient(remote.port)
    live.connect()
    live.subscribe("sensors/#", 1)
    near.publish("sensors/door", b"open", qos=1, retain=True)
    live.expect(1)  # it reached mosquitto
    later = PahoClient(remote.port)
    later.connect()
    later.subscribe("sensors/#", 1)
    [message] = later.expect(1)
    assert (message.topic, message.payload, message.retain) == ("sensors/door", b"open", True)
    live.disconnect()
    later.disconnect()
    remote.stop()
    greenfly.wait_for_log(r"bridge cloud: link to .* lost")
    [down] = near.expect(1)
    assert (down.topic, down.payload) == ("$SYS/broker/connection/cloud/state", b"0")
    near.disconnect()


def test_1000_qos1_survive_an_outage_and_kill_9_in_order(broker_factory, mosquitto, tmp_path):
    remote = mosquitto("persistence true\npersistence_location "
                       f"{tmp_path}/mosquitto0/\nmax_queued_messages 0\n")
    far = PahoClient(remote.port, client_id="far-sub", clean_session=False)
    far.connect()
    far.subscribe("site-a/#", 1)
    far.disconnect()
    greenfly = broker_factory(bridge_config("cloud", remote.port,
                                      ["sensors/# out 1 house/ site-a/"]))
    _connected(greenfly)
    remote.stop()  # saves far-sub's session on the way down
    greenfly.wait_for_log(r"bridge cloud: link to .* lost")
    raw = RawClient(greenfly.port)
    raw.connect()
    payloads = [f"m{i:04d}".encode() for i in range(1000)]
    publish_many(raw, "house/sensors/x", payloads)  # every one acknowledged
    raw.close()
    greenfly.kill9()
    greenfly.mark_log()
    greenfly.start()
    remote.start()
    _connected(greenfly)
    far = PahoClient(remote.port, client_id="far-sub", clean_session=False)
    far.connect()
    got = far.expect(1000, timeout=60)
    assert [m.payload for m in got] == payloads
    assert {m.topic for m in got} == {"site-a/sensors/x"}
    far.disconnect()


def test_two_greenflies_bridged_both_do_not_loop(broker_factory):
    left = broker_factory()
    right = broker_factory(bridge_config("left", left.port, ["a/# both 1"]))
    _connected(right, "left")
    on_left = PahoClient(left.port)
    on_left.connect()
    on_left.subscribe("a/#", 1)
    on_right = PahoClient(right.port)
    on_right.connect()
    on_right.subscribe("a/#", 1)
    # The bridge's SUBSCRIBE on the left may still be in flight: wait for a first crossing
    deadline = time.monotonic() + 10
    while on_right.messages.empty() and time.monotonic() < deadline:
        on_left.publish("a/warmup", b"w", qos=1)
        time.sleep(0.1)
    while not on_right.messages.empty():
        on_right.messages.get()
    time.sleep(0.3)
    for client in (on_left, on_right):
        while not client.messages.empty():
            client.messages.get()
    on_left.publish("a/from-left", b"L", qos=1)
    on_right.publish("a/from-right", b"R", qos=1)
    for client in (on_left, on_right):
        got = sorted((m.topic, m.payload) for m in client.expect(2))
        assert got == [("a/from-left", b"L"), ("a/from-right", b"R")]
    assert_no_loop(on_left, on_right)
    on_left.disconnect()
    on_right.disconnect()


def test_bridge_over_tls_with_a_test_ca(broker_factory, mosquitto, tmp_path):
    certs = make_certificates(tmp_path / "certs")
    remote = mosquitto(f"cafile {certs.ca}\ncertfile {certs.server_cert}\n"
                       f"keyfile {certs.server_key}\n")
    greenfly = broker_factory(bridge_config("cloud", remote.port, ["t/# out 1"],
                                      f'cafile = "{certs.ca}"'))
    _connected(greenfly)
    far = PahoClient(remote.port)
    far.client.tls_set(ca_certs=str(certs.ca))
    far.connect()
    far.subscribe("t/#", 1)
    near = PahoClient(greenfly.port)
    near.connect()
    near.publish("t/secret", b"s", qos=1)
    [got] = far.expect(1)
    assert (got.topic, got.payload) == ("t/secret", b"s")
    far.disconnect()
    near.disconnect()


def test_wrong_remote_password_is_logged_and_retried_with_growing_waits(
        broker_factory, mosquitto, tmp_path):
    passwords = tmp_path / "mosquitto.passwd"
    passwords.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(passwords), "house", "right"], check=True,
                   capture_output=True)
    remote = mosquitto(f"allow_anonymous false\npassword_file {passwords}\n")
    secret = tmp_path / "cloud.secret"
    secret.write_text("wrong\n")
    greenfly = broker_factory(
        f'[[bridge]]\nname = "cloud"\naddress = ["127.0.0.1:{remote.port}"]\n'
        f'topic = ["t/# out 1"]\nrestart_timeout = [0.2, 1.6]\nremote_username = "house"\n'
        f'remote_password_file = "{secret}"\n')
    refused = r"bridge cloud: remote refused the login: .*\(CONNACK 0x0[45]\); retrying in"
    for _ in range(4):
        greenfly.wait_for_log(refused)
        greenfly.mark_log()
    delays = [float(d) for d in re.findall(refused + r" ([\d.]+) s", greenfly.log_text())]
    assert len(delays) >= 4
    assert delays[0] < delays[1] < delays[2] < delays[3] <= 1.6, delays
    secret.write_text("right\n")  # read again at the next attempt
    _connected(greenfly)

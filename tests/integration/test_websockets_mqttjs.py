"""MQTT.js 5.x (the browser dashboards' client, here under Node.js) against greenfly over ws://.

MQTT.js runs in Node.js processes driven through `support.mqttjs` (the `mqttjs` fixture).
"""

from __future__ import annotations

import pytest
from support.broker import BrokerProcess
from support.clients import PahoClient, expect_marker, unique


@pytest.fixture(scope="module")
def wsbroker(tmp_path_factory: pytest.TempPathFactory):
    proc = BrokerProcess(tmp_path_factory.mktemp("ws-mqttjs"), websockets=True).start()
    yield proc
    proc.stop()


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
    expect_marker(watcher, watcher, topic)  # the will, had it gone out, would come first
    watcher.disconnect()

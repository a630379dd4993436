"""MQTT.js 5 with `protocolVersion: 5` against greenfly, over TCP (mqtt://) and WebSockets (ws://):
session expiry across a broker restart, topic aliases both ways, user properties in order,
a shared subscription, and the reason code of a denied publish.

MQTT.js runs in Node.js processes driven through `support.mqttjs` (the `mqttjs` fixture).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from support.broker import BrokerProcess
from support.clients import TIMEOUT, RawClient, unique
from support.mqttjs import MqttJs
from support.paho5 import Paho5

from broker.codec import ConnAck, Connect, Publish, SubAck, SubOptions, Subscribe

TRANSPORTS = ("tcp", "ws")
NOT_AUTHORIZED = 0x87


@pytest.fixture(scope="module")
def wsbroker(tmp_path_factory: pytest.TempPathFactory):
    proc = BrokerProcess(tmp_path_factory.mktemp("mqtt5-js"), websockets=True).start()
    yield proc
    proc.stop()


def url(broker: BrokerProcess, transport: str) -> str:
    if transport == "tcp":
        return f"mqtt://127.0.0.1:{broker.port}"
    return f"ws://127.0.0.1:{broker.ws_port}/mqtt"


def js5(mqttjs: Any, broker: BrokerProcess, transport: str, **options: Any) -> MqttJs:
    """A connected MQTT.js client speaking MQTT 5; its CONNACK event is `client.connack`."""
    client = mqttjs()
    options.setdefault("clientId", unique("js5"))
    client.connack = client.connect_url(url(broker, transport), protocolVersion=5, **options)
    assert client.connack["reasonCode"] == 0, client.connack
    return client


def paho_publisher(broker: BrokerProcess) -> Paho5:
    client = Paho5(broker.port)
    client.connect()
    return client


def v5_raw_subscriber(broker: BrokerProcess, topic_filter: str) -> RawClient:
    raw = RawClient(broker.port, protocol_level=5)
    raw.send_packet(Connect(unique("raw5"), 5, True, 60, properties={}), 5)
    assert isinstance(raw.recv_packet(), ConnAck)
    raw.send_packet(Subscribe(1, ((topic_filter, SubOptions(1)),)), 5)
    assert isinstance(raw.recv_packet(), SubAck)
    return raw


# -- session expiry -----------------------------------------------------------------------------

@pytest.mark.parametrize("transport", TRANSPORTS)
def test_session_with_expiry_resumes_after_a_broker_restart(broker_factory, mqttjs, transport):
    broker = broker_factory(websockets=True)
    client_id = unique(f"js5-{transport}")
    topic = f"js5/restart/{client_id}"
    session = {"clientId": client_id, "clean": False, "properties": {"sessionExpiryInterval": 600}}
    first = js5(mqttjs, broker, transport, **session)
    assert first.connack["sessionPresent"] is False
    assert first.subscribe(topic, qos=1) == [1]
    first.end()
    publisher = paho_publisher(broker)
    publisher.publish(topic, b"before restart", 1)
    publisher.close()

    broker.restart()
    publisher = paho_publisher(broker)
    publisher.publish(topic, b"after restart", 1)  # the subscription came back too
    publisher.close()

    again = js5(mqttjs, broker, transport, **session)
    assert again.connack["sessionPresent"] is True
    messages = again.expect(2)
    assert [m["payload"] for m in messages] == [b"before restart", b"after restart"]
    assert all(m["qos"] == 1 for m in messages)
    again.end()


def test_session_expiry_still_counts_after_a_restart(broker_factory, mqttjs):
    broker = broker_factory(websockets=True)
    client_id = unique("js5-short")
    session = {"clientId": client_id, "clean": False, "properties": {"sessionExpiryInterval": 2}}
    js5(mqttjs, broker, "tcp", **session).end()
    broker.restart()
    restarted_at = time.monotonic()
    time.sleep(max(0.0, restarted_at + 2.5 - time.monotonic()))  # its 2 s are over either way
    again = js5(mqttjs, broker, "tcp", **session)
    assert again.connack["sessionPresent"] is False


# -- topic aliases ------------------------------------------------------------------------------

@pytest.mark.parametrize("transport", TRANSPORTS)
def test_publishing_with_a_topic_alias_reaches_subscribers_under_the_full_topic(
        wsbroker, mqttjs, transport):
    topic = f"js5/alias/in/{unique()}"
    subscriber = Paho5(wsbroker.port)
    subscriber.connect()
    subscriber.subscribe(topic, 1)
    publisher = js5(mqttjs, wsbroker, transport)
    assert publisher.connack["properties"]["topicAliasMaximum"] >= 1
    publisher.publish(topic, b"sets alias 1", qos=1, topicAlias=1)
    publisher.publish("", b"uses alias 1", qos=1, topicAlias=1)  # no topic: the alias says it
    publisher.publish("", b"again", qos=0, topicAlias=1)
    messages = subscriber.expect(3)
    assert [(m.topic, m.payload) for m in messages] == [
        (topic, b"sets alias 1"), (topic, b"uses alias 1"), (topic, b"again")]
    assert all(not hasattr(m.properties, "TopicAlias") for m in messages)  # one hop only
    subscriber.close()


def test_mqttjs_auto_assigned_aliases_beyond_the_maximum_are_reassigned(wsbroker, mqttjs):
    # MQTT.js's autoAssignTopicAlias reuses the least recently used alias for a new topic once
    # all CONNACK offered are taken: the broker must follow each reassignment.
    base = f"js5/alias/lru/{unique()}"
    subscriber = Paho5(wsbroker.port)
    subscriber.connect()
    subscriber.subscribe(f"{base}/+", 1)
    publisher = js5(mqttjs, wsbroker, "tcp", autoAssignTopicAlias=True)
    maximum = publisher.connack["properties"]["topicAliasMaximum"]
    topics = [f"{base}/{i}" for i in range(maximum + 5)] * 2
    for i, topic in enumerate(topics):
        publisher.publish(topic, str(i).encode(), qos=1)
    messages = subscriber.expect(len(topics))
    assert [(m.topic, m.payload) for m in messages] == [
        (topic, str(i).encode()) for i, topic in enumerate(topics)]
    subscriber.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_broker_sends_topic_aliases_within_the_clients_maximum(wsbroker, mqttjs, transport):
    base = f"js5/alias/out/{unique()}"
    subscriber = js5(mqttjs, wsbroker, transport, properties={"topicAliasMaximum": 2})
    assert subscriber.subscribe(f"{base}/+", qos=1) == [1]
    publisher = paho_publisher(wsbroker)
    sent = [(f"{base}/{'abc'[i % 3]}", f"m{i}".encode()) for i in range(30)]
    for topic, payload in sent:
        publisher.publish(topic, payload, 1)
    messages = subscriber.expect(len(sent))
    # MQTT.js puts the topic back from the alias: every message under its own topic, in order.
    assert [(m["topic"], m["payload"]) for m in messages] == sent
    aliases = [m["properties"].get("topicAlias") for m in messages]
    used = [a for a in aliases if a is not None]
    assert used, "the broker never used a topic alias for topics it sent 10 times each"
    assert all(1 <= a <= 2 for a in used), aliases
    assert not subscriber.errors
    publisher.close()


def test_no_topic_aliases_for_a_client_that_offered_none(wsbroker, mqttjs):
    topic = f"js5/alias/none/{unique()}"
    subscriber = js5(mqttjs, wsbroker, "tcp")  # no topicAliasMaximum: 0
    subscriber.subscribe(topic, qos=0)
    publisher = paho_publisher(wsbroker)
    for i in range(10):
        publisher.publish(topic, f"m{i}".encode(), 1)
    messages = subscriber.expect(10)
    assert all("topicAlias" not in m["properties"] for m in messages)
    assert not subscriber.errors
    publisher.close()


# -- user properties ----------------------------------------------------------------------------

@pytest.mark.parametrize("transport", TRANSPORTS)
def test_user_properties_arrive_in_the_order_they_were_sent(wsbroker, mqttjs, transport):
    topic = f"js5/props/{unique()}"
    raw = v5_raw_subscriber(wsbroker, topic)
    js_subscriber = js5(mqttjs, wsbroker, transport)
    js_subscriber.subscribe(topic, qos=1)
    publisher = js5(mqttjs, wsbroker, transport)
    # Keys out of alphabetical order, one repeated: MQTT.js writes them in this order.
    user = {"zone": "b-2", "app": "meter", "tag": ["first", "second"]}
    publisher.publish(topic, b"reading", qos=1, userProperties=user, contentType="text/plain")

    delivery = raw.recv_packet()
    assert isinstance(delivery, Publish) and delivery.payload == b"reading"
    assert list(delivery.properties["user_property"]) == [
        ("zone", "b-2"), ("app", "meter"), ("tag", "first"), ("tag", "second")]
    assert delivery.properties["content_type"] == "text/plain"
    [message] = js_subscriber.expect(1)
    assert list(message["properties"]["userProperties"].items()) == list(user.items())
    raw.close()


# -- shared subscriptions -----------------------------------------------------------------------

def expect_between(clients: list[MqttJs], total: int,
                   timeout: float = TIMEOUT) -> list[list[dict[str, Any]]]:
    """Messages as they arrive at any of `clients`, until `total` arrived in all."""
    got: list[list[dict[str, Any]]] = [[] for _ in clients]
    deadline = time.monotonic() + timeout
    while sum(map(len, got)) < total:
        if time.monotonic() > deadline:
            raise AssertionError(f"{sum(map(len, got))} of {total} messages arrived: {got}")
        for i, client in enumerate(clients):
            while not client.messages.empty():
                got[i].append(client.messages.get_nowait())
        time.sleep(0.01)
    return got


def test_shared_subscription_gives_each_message_to_exactly_one_member(wsbroker, mqttjs):
    group_filter = f"js5/shared/{unique()}/+"
    shared = f"$share/workers/{group_filter}"
    members = [js5(mqttjs, wsbroker, "tcp"), js5(mqttjs, wsbroker, "ws")]
    for member in members:
        assert member.subscribe(shared, qos=1) == [1]
    publisher = paho_publisher(wsbroker)
    payloads = [f"job {i}".encode() for i in range(20)]
    for payload in payloads:
        publisher.publish(group_filter.replace("+", "jobs"), payload, 1)
    got = expect_between(members, len(payloads))
    received = [m["payload"] for per_member in got for m in per_member]
    # As many as were sent and none twice: each went to exactly one member.
    assert sorted(received) == sorted(payloads)
    for per_member in got:
        assert all(m["topic"] == group_filter.replace("+", "jobs") for m in per_member)
    publisher.close()


# -- a denied publish ---------------------------------------------------------------------------

ACL = "topic readwrite js5/open/#\ntopic read js5/#\n"


@pytest.mark.parametrize(("transport", "qos"), [("tcp", 1), ("ws", 1), ("tcp", 2)])
def test_publish_the_acl_denies_is_answered_not_authorized(broker_factory, tmp_path, mqttjs,
                                                          transport, qos):
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    broker = broker_factory(f'[broker]\nacl_file = "{acl}"\nallow_anonymous = true\n',
                            websockets=True)
    watcher = js5(mqttjs, broker, "tcp")
    assert watcher.subscribe("js5/#", qos=1) == [1]
    client = js5(mqttjs, broker, transport)
    denied = client.publish("js5/closed/x", b"not allowed", qos=qos, check=False)
    assert denied.get("code") == NOT_AUTHORIZED, denied  # MQTT.js: an error with code 135
    # The connection stays up and what it may publish still goes through.
    client.publish("js5/open/x", b"allowed", qos=qos)
    [message] = watcher.expect(1)
    assert (message["topic"], message["payload"]) == ("js5/open/x", b"allowed")

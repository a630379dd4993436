"""`$SYS/broker/...` with Mosquitto's names, retained, every `sys_interval` seconds."""

from __future__ import annotations

import re

import pytest
from support.broker import BrokerProcess
from support.clients import PahoClient, unique

REQUIRED = [
    "version", "uptime", "clients/connected", "clients/disconnected", "clients/total",
    "clients/maximum", "subscriptions/count", "retained messages/count", "messages/received",
    "messages/sent", "publish/messages/dropped", "bytes/received", "bytes/sent",
    "store/messages/count", "store/messages/bytes", "messages/stored", "clients/active",
    "clients/inactive", "clients/expired", "subscriptions/count", "shared_subscriptions/count",
    "publish/messages/received", "publish/messages/sent", "publish/bytes/received",
    "publish/bytes/sent", "heap/current", "heap/maximum",
    *(f"load/{name}/{window}" for name in ("messages/received", "messages/sent",
                                           "bytes/received", "bytes/sent", "connections")
      for window in ("1min", "5min", "15min")),
]


@pytest.fixture(scope="module")
def sys_broker(tmp_path_factory):
    proc = BrokerProcess(tmp_path_factory.mktemp("sys"), sys_interval=1).start()
    yield proc
    proc.stop()


def _collect(client: PahoClient, seconds: float) -> dict[str, list]:
    seen: dict[str, list] = {}
    try:
        while True:
            message = client.messages.get(timeout=seconds)
            seen.setdefault(message.topic, []).append(message)
    except Exception:
        return seen


def test_sys_topics_have_mosquitto_names_and_formats_and_are_retained(sys_broker):
    client = PahoClient(sys_broker.port)
    client.connect()
    client.subscribe("$SYS/broker/#", 0)
    seen = _collect(client, 0.7)
    for name in REQUIRED:
        topic = f"$SYS/broker/{name}"
        assert topic in seen, f"missing {topic}"
        assert seen[topic][0].retain, f"{topic} not retained"
    value = {t: m[0].payload.decode() for t, m in seen.items()}
    assert re.fullmatch(r"greenfly version \d+\.\d+\.\d+", value["$SYS/broker/version"])
    assert re.fullmatch(r"\d+ seconds", value["$SYS/broker/uptime"])
    assert re.fullmatch(r"\d+\.\d\d", value["$SYS/broker/load/messages/received/1min"])
    client.disconnect()


def test_uptime_is_republished_every_interval(sys_broker):
    client = PahoClient(sys_broker.port)
    client.connect()
    client.subscribe("$SYS/broker/uptime", 0)
    values = [int(m.payload.split()[0]) for m in client.expect(3, timeout=4)]
    assert values[0] <= values[1] < values[2] or values[0] < values[1] <= values[2]
    client.disconnect()


def test_connected_count_follows_clients(sys_broker):
    watcher = PahoClient(sys_broker.port)
    watcher.connect()
    watcher.subscribe("$SYS/broker/clients/connected", 0)
    start = int(watcher.expect(1)[0].payload)
    extra = [PahoClient(sys_broker.port) for _ in range(3)]
    for client in extra:
        client.connect()
    value = start
    for _ in range(10):
        value = int(watcher.expect(1, timeout=3)[0].payload)
        if value == start + 3:
            break
    assert value == start + 3
    for client in extra:
        client.disconnect()
    watcher.disconnect()


def test_wildcard_at_first_level_does_not_receive_sys_topics(sys_broker):
    client = PahoClient(sys_broker.port)
    client.connect()
    client.subscribe("#", 0)
    client.subscribe("+/broker/#", 0)
    marker = f"{unique('marker')}/x"
    client.publish(marker, b"m", qos=1)
    seen = _collect(client, 2.2)  # two $SYS intervals
    assert list(seen) == [marker]
    client.disconnect()


def test_sys_interval_0_publishes_nothing(broker):
    client = PahoClient(broker.port)  # the shared broker runs with sys_interval = 0
    client.connect()
    client.subscribe("$SYS/#", 0)
    client.expect_none(1.5)
    client.disconnect()


def test_heap_maximum_is_never_below_heap_current(sys_broker):
    # The maximum is the largest resident size seen, this sample included (the kernel's
    # high-water mark lags the resident size it reports in /proc, so it cannot be taken alone).
    # Values are published when they change, each second's together: check after each second.
    watcher = PahoClient(sys_broker.port)
    watcher.connect()
    watcher.subscribe("$SYS/broker/heap/#", 0)
    latest: dict[str, int] = {}
    seen = []
    for _ in range(6):
        batch = _collect(watcher, 0.6)  # sys_interval is 1 s: one publication's worth
        for topic, messages in batch.items():
            latest[topic.rsplit("/", 1)[1]] = int(messages[-1].payload)
        if len(latest) == 2:
            seen.append((latest["current"], latest["maximum"]))
        # The broker grows by 10 MB of retained messages, small enough to come from the heap.
        topic = unique("heap")
        for n in range(200):
            watcher.publish(f"{topic}/{n}", bytes(50_000), qos=0, retain=True)
    assert len(seen) >= 3, seen
    for current, maximum in seen:
        assert maximum >= current > 0, seen
    assert [m for _, m in seen] == sorted(m for _, m in seen), seen
    watcher.disconnect()

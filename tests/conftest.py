"""Fixtures: a shared broker per test module, and a factory for brokers with their own config.

`make test` runs the suite on pytest-xdist workers, a whole file to a worker (`--dist
loadfile`), so a module-scoped broker starts once; the hook below decides which files go first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.broker import BrokerProcess


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files with the most tests marked `slow` first (a stable sort: each file stays whole
    and in its order), so the workers start on the long files and none is left for last
    while the other workers have nothing to do."""
    slow = Counter(item.path for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.path])


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker for a whole test module; tests use unique client ids and topics."""
    proc = BrokerProcess(tmp_path_factory.mktemp("broker")).start()
    yield proc
    proc.stop()


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator:
    """Start brokers with their own config: `broker_factory(extra_toml, **kwargs)`."""
    started: list[BrokerProcess] = []

    def make(extra: str = "", start: bool = True, **kwargs: object) -> BrokerProcess:
        proc = BrokerProcess(tmp_path / f"broker{len(started)}", extra, **kwargs)
        started.append(proc)
        return proc.start() if start else proc

    yield make
    for proc in started:
        proc.stop()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator:
    """Start Debian mosquittos on loopback: `mosquitto(extra_conf, start=True, port=None)`."""
    from support.mosquitto import Mosquitto

    started: list[Mosquitto] = []

    def make(extra: str = "", start: bool = True, port: int | None = None) -> Mosquitto:
        broker = Mosquitto(tmp_path / f"mosquitto{len(started)}", extra, port)
        started.append(broker)
        return broker.start() if start else broker

    yield make
    for broker in started:
        broker.stop()


@pytest.fixture
def mqttjs() -> Iterator:
    """A factory of MQTT.js clients (Node.js processes), all closed after the test."""
    from support.mqttjs import MqttJs

    clients: list[MqttJs] = []

    def make() -> MqttJs:
        clients.append(MqttJs())
        return clients[-1]

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator:
    """A started Debian redis-server on loopback (AOF, appendfsync always), stopped by its PID
    afterwards: `.url`, `.port`, `.kill()`, `.restart()`, `.client()` (tests/support/redis.py)."""
    from support.redis import RedisServer

    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.close()

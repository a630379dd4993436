"""Debian's mosquitto_pub / mosquitto_sub against greenfly: pub/sub, retained, will."""

from __future__ import annotations

import select
import shutil
import subprocess

import pytest
from support.clients import PahoClient, unique

MOSQUITTO_SUB = shutil.which("mosquitto_sub")
MOSQUITTO_PUB = shutil.which("mosquitto_pub")


@pytest.fixture(autouse=True)
def _clients_installed():
    # `make test` installs mosquitto-clients; running without it is a broken setup, not a skip.
    assert MOSQUITTO_SUB and MOSQUITTO_PUB, "mosquitto-clients missing: run `make test`"


def _sub(port: int, *args: str) -> subprocess.Popen:
    return subprocess.Popen([MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(port), "-v", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _pub(port: int, *args: str) -> None:
    subprocess.run([MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(port), *args], check=True,
                   timeout=10)


def _readline(proc: subprocess.Popen, timeout: float = 10.0) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "mosquitto_sub printed nothing in time"
    return proc.stdout.readline().decode().rstrip("\n")


def test_mosquitto_pub_reaches_mosquitto_sub(broker):
    prefix = unique("mq")
    # A retained marker arrives as soon as mosquitto_sub's subscription is in place.
    _pub(broker.port, "-t", f"{prefix}/ready", "-m", "ready", "-r", "-q", "1")
    sub = _sub(broker.port, "-t", f"{prefix}/#", "-C", "3", "-W", "10", "-q", "1")
    assert _readline(sub) == f"{prefix}/ready ready"
    _pub(broker.port, "-t", f"{prefix}/a/b", "-m", "hi", "-q", "1")
    _pub(broker.port, "-t", f"{prefix}/c", "-m", "there", "-q", "2")
    assert _readline(sub) == f"{prefix}/a/b hi"
    assert _readline(sub) == f"{prefix}/c there"
    assert sub.wait(10) == 0


def test_mosquitto_retained_message_reaches_a_late_mosquitto_sub(broker):
    topic = f"{unique('mqret')}/state"
    _pub(broker.port, "-t", topic, "-m", "on", "-r", "-q", "1")
    result = subprocess.run([MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(broker.port), "-v",
                             "-t", topic, "-C", "1", "-W", "10"],
                            capture_output=True, timeout=15, check=True)
    assert result.stdout.decode().strip() == f"{topic} on"
    # mosquitto_sub -R skips retained messages ("stale"): with it, nothing arrives in time.
    stale = subprocess.run([MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(broker.port), "-v",
                            "-t", topic, "-C", "1", "-W", "1", "-R"], capture_output=True,
                           timeout=15)
    assert stale.stdout == b""


def test_mosquitto_sub_will_is_published_when_it_is_killed(broker):
    topic = f"{unique('mqwill')}/status"
    watcher = PahoClient(broker.port)
    watcher.connect()
    watcher.subscribe(topic, 1)
    broker.mark_log()
    client_id = unique("mqsub")
    sub = subprocess.Popen([MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(broker.port),
                            "-i", client_id, "-t", f"{topic}/ignored",
                            "--will-topic", topic, "--will-payload", "mosquitto_sub died",
                            "--will-qos", "1"], stdout=subprocess.DEVNULL)
    broker.wait_for_log(rf"client connected: {client_id} ")
    sub.kill()
    sub.wait(5)
    [message] = watcher.expect(1)
    assert (message.topic, message.payload, message.qos) == (topic, b"mosquitto_sub died", 1)
    watcher.disconnect()

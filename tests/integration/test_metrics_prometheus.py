"""`GET /metrics` on the http listener, scraped by a real Prometheus server (Debian's
`prometheus`) on loopback: the target is up and a query returns what the test connected."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.broker import free_port, wait_for_port
from support.clients import PahoClient, unique
from support.http import HTTP_LISTENER, request

PROMETHEUS = shutil.which("prometheus")
REQUIRED = [
    "greenfly_clients_connected", "greenfly_sessions", "greenfly_subscriptions",
    "greenfly_retained_messages", "greenfly_messages_received", "greenfly_messages_sent",
    "greenfly_publish_messages_dropped", "greenfly_queued_messages",
    "greenfly_bytes_received", "greenfly_bytes_sent", "greenfly_connections",
    "greenfly_disconnects", "greenfly_journal_bytes", "greenfly_journal_fsync_seconds",
    "greenfly_auth_failures", "process_cpu_seconds", "process_resident_memory_bytes",
]


def metrics(port: int) -> dict[str, list]:
    reply = request(f"http://127.0.0.1:{port}/metrics")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {family.name: family.samples for family in text_string_to_metric_families(reply.text)}


def value(samples: list, **labels: str) -> float:
    found = [s.value for s in samples if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (labels, samples)
    return found[0]


def test_metrics_names_and_counters_follow_what_clients_do(broker_factory):
    broker = broker_factory(HTTP_LISTENER)
    port = broker.port_of("http")
    before = metrics(port)
    assert not [name for name in REQUIRED if name not in before]
    assert value(before["greenfly_clients_connected"]) == 0
    topic = unique("m/")
    sub = PahoClient(broker.port)
    sub.connect()
    sub.subscribe(topic, 1)
    pub = PahoClient(broker.port)
    pub.connect()
    pub.publish(topic, b"x" * 100, qos=1)
    sub.expect(1)
    pub.disconnect()
    broker.wait_for_log(rf"client disconnected: {pub.client_id} ")  # counted by then
    after = metrics(port)
    assert value(after["greenfly_clients_connected"]) == 1
    assert value(after["greenfly_sessions"], state="online") == 1
    assert value(after["greenfly_subscriptions"]) == 1
    assert value(after["greenfly_messages_received"]) == 1
    assert value(after["greenfly_messages_sent"]) == 1
    assert value(after["greenfly_connections"], listener=f"mqtt://127.0.0.1:{broker.port}") == 2
    assert value(after["greenfly_disconnects"], reason="client_disconnect") == 1
    assert value(after["greenfly_bytes_received"]) > value(before["greenfly_bytes_received"]) + 100
    fsyncs = [s for s in after["greenfly_journal_fsync_seconds"] if s.name.endswith("_count")]
    assert fsyncs[0].value >= 0  # persistent=False clients write nothing; present anyway
    sub.disconnect()


def test_a_wrong_mqtt_password_counts_as_an_auth_failure(broker_factory, tmp_path):
    passwd = tmp_path / "passwd"
    subprocess.run([*_greenfly(), "passwd", "-b", "-c", str(passwd), "alice", "secret"],
                   check=True, capture_output=True, timeout=30)
    broker = broker_factory(f'[broker]\npassword_file = "{passwd}"\n' + HTTP_LISTENER)
    client = PahoClient(broker.port, username="alice", password="wrong")
    _present, code = client.connect()
    client.disconnect()
    assert code != 0
    assert value(metrics(broker.port_of("http"))["greenfly_auth_failures"], protocol="mqtt") == 1


def _greenfly() -> list[str]:
    import sys

    return [sys.executable, "-m", "broker"]


@pytest.mark.slow
@pytest.mark.skipif(PROMETHEUS is None, reason="Debian's prometheus is not installed "
                    "(tests/setup/install-test-deps.sh installs it)")
def test_a_real_prometheus_scrapes_the_broker(broker_factory, tmp_path):
    broker = broker_factory(HTTP_LISTENER)
    http_port = broker.port_of("http")
    clients = [PahoClient(broker.port) for _ in range(3)]
    for client in clients:
        client.connect()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: greenfly\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{http_port}']\n")
    web = free_port()
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{web}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    log.close()
    try:
        wait_for_port(web, 30, proc)
        _poll(lambda: request(f"http://127.0.0.1:{web}/-/ready").status == 200,
              "Prometheus ready")
        api = f"http://127.0.0.1:{web}/api/v1"
        target = _poll(lambda: _up_target(api), "the greenfly target up")
        assert target["scrapeUrl"] == f"http://127.0.0.1:{http_port}/metrics"
        query = urllib.parse.quote("greenfly_clients_connected")
        result = _poll(lambda: _query_equals(f"{api}/query?query={query}", 3),
                       "greenfly_clients_connected == 3")
        assert result["metric"]["job"] == "greenfly"
    finally:
        proc.terminate()
        proc.wait(10)
        for client in clients:
            client.disconnect()


def _up_target(api: str) -> dict | None:
    targets = json.loads(request(f"{api}/targets").body)["data"]["activeTargets"]
    up = [t for t in targets if t["labels"]["job"] == "greenfly" and t["health"] == "up"]
    return up[0] if up else None


def _query_equals(url: str, expected: float) -> dict | None:
    results = json.loads(request(url).body)["data"]["result"]
    return results[0] if results and float(results[0]["value"][1]) == expected else None


def _poll(probe, what: str, timeout: float = 30.0):
    """`probe()` until it returns something, every 0.2 s, for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"Prometheus never showed {what} within {timeout}s")

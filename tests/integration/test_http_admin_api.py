"""The JSON admin API under /api/v1/: pages of clients, sessions, subscriptions and retained
topics, and the three actions, refused without the bearer token and done with it."""

from __future__ import annotations

import time
import urllib.parse

from support.clients import PahoClient, unique
from support.http import request
from support.paho5 import Paho5

TOKEN = "s3cret-token-for-tests"


def http_broker(broker_factory, tmp_path, bind: str = "127.0.0.1"):
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    listener = (f'[[listener]]\nbind = "{bind}"\nport = 0\nprotocol = "http"\n'
                f'token_file = "{token}"\n')
    broker = broker_factory(listener)
    return broker, f"http://127.0.0.1:{broker.port_of('http')}/api/v1"


def test_clients_are_listed_in_pages_with_what_an_operator_needs(broker_factory, tmp_path):
    broker, api = http_broker(broker_factory, tmp_path)
    prefix = unique("page")
    clients = [PahoClient(broker.port, client_id=f"{prefix}-{i}", keepalive=30 + i)
               for i in range(3)]
    for client in clients:
        client.connect()
    clients[1].subscribe(f"{prefix}/a", 1)
    first = request(f"{api}/clients?limit=2").json()
    assert first["total"] == 3 and first["limit"] == 2 and len(first["items"]) == 2
    rest = request(f"{api}/clients?limit=2&offset=2").json()
    items = first["items"] + rest["items"]
    assert [item["client_id"] for item in items] == [f"{prefix}-{i}" for i in range(3)]
    one = items[1]
    assert one["address"].startswith("127.0.0.1:")
    assert one["protocol"] == "MQTT 3.1.1" and one["transport"] == "mqtt"
    assert one["keepalive"] == 31 and one["subscriptions"] == 1
    assert one["inflight"] == 0 and one["queued"] == 0 and one["user"] is None
    assert one["connected_since"].endswith("+00:00")
    filtered = request(f"{api}/clients?q={prefix}-2").json()
    assert [item["client_id"] for item in filtered["items"]] == [f"{prefix}-2"]
    detail = request(f"{api}/clients/{prefix}-1").json()
    assert detail["subscriptions"] == [{"filter": f"{prefix}/a", "qos": 1}]
    subs = request(f"{api}/subscriptions").json()
    assert {"client_id": f"{prefix}-1", "filter": f"{prefix}/a", "qos": 1} in subs["items"]
    assert request(f"{api}/clients?limit=100000").status == 400
    for client in clients:
        client.disconnect()


def test_actions_are_refused_without_the_token_and_done_with_it(broker_factory, tmp_path):
    broker, api = http_broker(broker_factory, tmp_path)
    cid = unique("kick")
    client = Paho5(broker.port, client_id=cid)
    client.connect()
    url = f"{api}/clients/{cid}/disconnect"
    refused = request(url, "POST")
    assert refused.status == 401 and "Bearer" in refused.headers["WWW-Authenticate"]
    assert request(url, "POST", token="wrong").status == 401
    assert request(f"{api}/clients/{cid}").status == 200  # still there
    done = request(url, "POST", token=TOKEN)
    assert done.status == 200 and done.json() == {"disconnected": cid}
    assert client.disconnects.get(timeout=5)[0] == 0x98  # MQTT 5: administrative action
    assert request(f"{api}/clients/{cid}").status == 404
    client.client.loop_stop()
    broker.wait_for_log(rf"client disconnected: {cid} .*reason=disconnected by an operator")


def test_an_offline_session_and_a_retained_message_are_deleted(broker_factory, tmp_path):
    broker, api = http_broker(broker_factory, tmp_path)
    cid = unique("gone")
    topic = f"{cid}/state"
    device = PahoClient(broker.port, client_id=cid, clean_session=False)
    device.connect()
    device.subscribe(f"{cid}/cmd", 1)
    device.publish(topic, b"on", qos=1, retain=True)
    online = request(f"{api}/sessions/{cid}", "DELETE", token=TOKEN)
    assert online.status == 409
    device.disconnect()
    sessions = _until(lambda: request(f"{api}/sessions").json()["items"])
    assert [item["client_id"] for item in sessions] == [cid]
    assert sessions[0]["subscriptions"] == 1 and sessions[0]["disconnected_at"]
    retained = request(f"{api}/retained?prefix={cid}").json()
    assert retained["items"] == [{"topic": topic, "qos": 1, "bytes": 2}]
    assert request(f"{api}/sessions/{cid}", "DELETE").status == 401
    assert request(f"{api}/sessions/{cid}", "DELETE", token=TOKEN).status == 200
    quoted = urllib.parse.quote(topic)
    assert request(f"{api}/retained/{quoted}", "DELETE").status == 401
    assert request(f"{api}/retained/{quoted}", "DELETE", token=TOKEN).status == 200
    assert request(f"{api}/retained/{quoted}", "DELETE", token=TOKEN).status == 404
    # Both stay gone after a restart: the deletions are in the journal.
    broker.restart()
    api = f"http://127.0.0.1:{broker.port_of('http')}/api/v1"
    assert request(f"{api}/sessions").json()["total"] == 0
    assert request(f"{api}/retained?prefix={cid}").json()["total"] == 0
    again = PahoClient(broker.port, client_id=cid, clean_session=False)
    assert again.connect() == (False, 0)  # no session present
    again.disconnect()


def test_a_non_loopback_bind_needs_the_token_for_reads_too(broker_factory, tmp_path):
    broker, _ = http_broker(broker_factory, tmp_path, bind="0.0.0.0")
    base = f"http://127.0.0.1:{broker.port_of('http')}"
    assert request(f"{base}/api/v1/clients").status == 401
    assert request(f"{base}/metrics").status == 401
    assert request(f"{base}/api/v1/clients", token=TOKEN).status == 200
    assert request(f"{base}/metrics", token=TOKEN).status == 200
    assert request(f"{base}/healthz").status == 200  # probes carry no token


def test_wrong_tokens_slow_down_like_wrong_passwords(broker_factory, tmp_path):
    broker, api = http_broker(broker_factory, tmp_path)
    started = time.monotonic()
    for _ in range(3):  # failures 2 and 3 wait 0.25 s and 0.5 s
        assert request(f"{api}/sessions/x", "DELETE", token="guess").status == 401
    assert time.monotonic() - started >= 0.7
    broker.wait_for_log(r"wrong bearer token \(refused after 0\.5s\)")


def _until(probe, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("never happened")

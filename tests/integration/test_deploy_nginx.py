"""greenfly behind a real nginx (Debian's package), configured with what `greenfly deploy` prints.

- The rendered `greenfly deploy nginx --no-tls` file in front of the broker: MQTT.js and paho
  over ws:// pass QoS 1 publish/subscribe and offline delivery through it.
- The same over TLS with a certificate the test makes: wss:// through the http file and
  mqtts:// through the stream file (`greenfly deploy nginx-stream`).
- The failure the deploy kit exists for, reproduced: nginx with `proxy_read_timeout 2s`;
  `greenfly probe --idle 20` finds the cut at about 2 s, and a paho client with keepalive 10,
  reconnecting through it, makes the broker log one proxy-timeout warning. With the rendered
  timeouts a keepalive-2 client stays connected.
"""

from __future__ import annotations

import http.client
import queue
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.broker import REPO, BrokerProcess, free_port
from support.clients import PahoClient, unique
from support.deploy import Nginx, deploy, greenfly, self_signed, wait_until, ws_nginx

BROKER_LIMITS = "[limits]\nmax_keepalive = 60\n"


@pytest.fixture(scope="module")
def wsbroker(tmp_path_factory: pytest.TempPathFactory):
    proc = BrokerProcess(tmp_path_factory.mktemp("behind-nginx"), BROKER_LIMITS,
                         websockets=True).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def plain_nginx(wsbroker, tmp_path_factory: pytest.TempPathFactory):
    nginx = ws_nginx(tmp_path_factory.mktemp("nginx"), wsbroker.config_path).start()
    yield nginx
    nginx.stop()


@dataclass
class TlsFront:
    nginx: Nginx
    https: int
    http: int
    mqtts: int
    ca: Path


@pytest.fixture(scope="module")
def tls_front(wsbroker, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("nginx-tls")
    cert, key = self_signed(work / "certs")
    https, plain, mqtts = free_port(), free_port(), free_port()
    tls = ("--cert", str(cert), "--key", str(key))
    conf = deploy("nginx", wsbroker.config_path, "--listen", f"127.0.0.1:{https}",
                  "--http-listen", f"127.0.0.1:{plain}", *tls)
    stream = deploy("nginx-stream", wsbroker.config_path, "--listen", f"127.0.0.1:{mqtts}", *tls)
    nginx = Nginx(work / "nginx", http=conf, stream=stream, ports=(https, plain, mqtts)).start()
    yield TlsFront(nginx, https, plain, mqtts, cert)
    nginx.stop()



def paho_via(port: int, transport: str, ca: Path | None = None, **kwargs) -> PahoClient:
    client = PahoClient(port, transport=transport, **kwargs)
    if ca is not None:
        client.client.tls_set(ca_certs=str(ca))
    return client


def publish_three(publisher: PahoClient, topic: str) -> list[bytes]:
    payloads = [f"while away {i}".encode() for i in range(3)]
    assert publisher.connect()[1] == 0
    for payload in payloads:
        publisher.publish(topic, payload, qos=1)
    publisher.disconnect()
    return payloads


def mqttjs_offline_delivery(make, url: str, publisher: PahoClient, **options) -> None:
    """QoS 1 round trip, then three messages published while the MQTT.js client is away."""
    client_id, topic = unique("js-nginx"), unique("nginx/js")
    first = make()
    connack = first.call("connect", url=url, options={"clientId": client_id, "clean": False,
                                                      "keepalive": 30, **options})
    assert connack["returnCode"] == 0
    assert first.subscribe(topic, qos=1) == [1]
    first.publish(topic, b"through nginx", qos=1)
    assert first.expect(1)[0]["payload"] == b"through nginx"
    first.end()
    payloads = publish_three(publisher, topic)
    again = make()
    connack = again.call("connect", url=url, options={"clientId": client_id, "clean": False,
                                                      "keepalive": 30, **options})
    assert connack["sessionPresent"] is True
    messages = again.expect(3)
    assert [m["payload"] for m in messages] == payloads and {m["qos"] for m in messages} == {1}
    again.end()


def paho_offline_delivery(subscriber, resubscriber, publisher: PahoClient) -> None:
    topic = unique("nginx/paho")
    assert subscriber.connect() == (False, 0)
    assert subscriber.subscribe(topic, 1) == [1]
    subscriber.publish(topic, b"through nginx", qos=1)
    assert subscriber.expect(1)[0].payload == b"through nginx"
    subscriber.disconnect()
    payloads = publish_three(publisher, topic)
    assert resubscriber.connect() == (True, 0)
    messages = resubscriber.expect(3)
    assert [m.payload for m in messages] == payloads and {m.qos for m in messages} == {1}
    resubscriber.disconnect()


# -- ws:// through the rendered --no-tls file -----------------------------------------------------

def test_mqttjs_qos1_and_offline_delivery_through_nginx(plain_nginx, mqttjs):
    url = f"ws://127.0.0.1:{plain_nginx.port}/mqtt"
    mqttjs_offline_delivery(mqttjs, url, paho_via(plain_nginx.port, "websockets"))
    access = plain_nginx.workdir / "access.log"
    wait_until(lambda: '"GET /mqtt HTTP/1.1" 101' in access.read_text(), 5,
               "nginx to log the upgraded request")


def test_paho_qos1_and_offline_delivery_through_nginx(plain_nginx):
    client_id = unique("paho-nginx")
    paho_offline_delivery(
        paho_via(plain_nginx.port, "websockets", client_id=client_id, clean_session=False),
        paho_via(plain_nginx.port, "websockets", client_id=client_id, clean_session=False),
        paho_via(plain_nginx.port, "websockets"))


# -- wss:// and mqtts:// through the rendered TLS files -------------------------------------------

def test_mqttjs_over_wss_through_nginx(tls_front, mqttjs):
    url = f"wss://127.0.0.1:{tls_front.https}/mqtt"
    mqttjs_offline_delivery(mqttjs, url, paho_via(tls_front.mqtts, "tcp", tls_front.ca),
                            ca=tls_front.ca.read_text())


@pytest.mark.parametrize("scheme", ["wss", "mqtts"])
def test_paho_over_tls_through_nginx(tls_front, scheme):
    port, transport = ((tls_front.https, "websockets") if scheme == "wss"
                       else (tls_front.mqtts, "tcp"))
    other = (tls_front.mqtts, "tcp") if scheme == "wss" else (tls_front.https, "websockets")
    client_id = unique(f"paho-{scheme}")
    paho_offline_delivery(
        paho_via(port, transport, tls_front.ca, client_id=client_id, clean_session=False),
        paho_via(port, transport, tls_front.ca, client_id=client_id, clean_session=False),
        paho_via(*other, tls_front.ca))


def test_plain_http_is_redirected_to_https(tls_front):
    conn = http.client.HTTPConnection("127.0.0.1", tls_front.http, timeout=5)
    conn.request("GET", "/mqtt", headers={"Host": "mqtt.example.com"})
    response = conn.getresponse()
    assert response.status == 301
    assert response.getheader("Location") == "https://mqtt.example.com/mqtt"


@pytest.mark.parametrize("scheme", ["wss", "mqtts"])
def test_probe_reports_tls_websocket_and_connack_through_nginx(tls_front, scheme):
    port = tls_front.https if scheme == "wss" else tls_front.mqtts
    result = greenfly("probe", f"{scheme}://127.0.0.1:{port}/mqtt", "--cafile", str(tls_front.ca))
    assert re.search(r"tls: TLSv1\.[23] \S+ in [\d.]+ ms; certificate commonName=localhost",
                     result.stdout), result.stdout
    if scheme == "wss":
        assert "websocket: GET /mqtt -> 101" in result.stdout
        assert "subprotocol mqtt" in result.stdout
    assert "mqtt: CONNACK accepted" in result.stdout and result.stdout.endswith("ok\n")


def test_probe_refuses_a_certificate_it_cannot_verify(tls_front):
    result = greenfly("probe", f"mqtts://127.0.0.1:{tls_front.mqtts}", check=False)
    assert result.returncode == 1
    assert "tls: the certificate does not verify" in result.stdout, result.stdout


# -- the failure: an idle timeout shorter than the clients' keepalive ---------------------------

@pytest.fixture(scope="module")
def short_timeout_nginx(wsbroker, tmp_path_factory: pytest.TempPathFactory):
    nginx = ws_nginx(tmp_path_factory.mktemp("nginx-2s"), wsbroker.config_path,
                     read_timeout="2s").start()
    yield nginx
    nginx.stop()


def test_probe_idle_finds_the_2s_proxy_read_timeout(short_timeout_nginx):
    start = time.monotonic()
    result = greenfly("probe", "--idle", "20", f"ws://127.0.0.1:{short_timeout_nginx.port}/mqtt",
                      check=False)
    took = time.monotonic() - start
    assert result.returncode == 1, result.stdout
    match = re.search(r"closed by the path after ([\d.]+) s idle: a proxy idle timeout of about "
                      r"2 s; with keepalive 30 it needs to be over 45 s: raise "
                      r"proxy_read_timeout", result.stdout)
    assert match, result.stdout
    assert 1.8 <= float(match.group(1)) <= 3.0
    assert took < 10  # it reports the cut when it happens, not after the 20 s


@pytest.mark.slow
def test_client_cut_by_the_proxy_again_and_again_gets_one_broker_warning(wsbroker,
                                                                         short_timeout_nginx):
    wsbroker.mark_log()
    client = paho_via(short_timeout_nginx.port, "websockets", client_id=unique("cut"),
                      keepalive=10)
    client.client.reconnect_delay_set(0.2, 0.2)
    try:
        assert client.connect()[1] == 0
        warning = wsbroker.wait_for_log(
            rf"WARNING greenfly\.connection: client {client.client_id}: its last 3 connections "
            r"were each closed by the peer after about (\d\.\d) s .*likely cause: a proxy or NAT "
            r"idle timeout of about \d\.\d s versus the client's keepalive 10 s", timeout=15)
        assert 1.8 <= float(warning.group(1)) < 4  # nginx's 2 s, not the keepalive's 10 s
        # One more cut and reconnect: still that one warning, not one per disconnect.
        wait_until(lambda: f"client disconnected: {client.client_id}"
                   in wsbroker.log_text()[warning.end():], 10, "a fourth cut")
    finally:
        client.client.disconnect()
        client.client.loop_stop()
    log = wsbroker.log_text()
    assert len(re.findall(rf"WARNING .*client {client.client_id}: its last", log)) == 1


@pytest.mark.slow
def test_rendered_timeouts_keep_a_client_at_max_keepalive_connected(tmp_path):
    # max_keepalive 2 gives proxy_read_timeout 4s: the tightest the rule ever gets. A client
    # pinging every 2 s stays connected for 10 s, while a keepalive-0 probe through the same
    # nginx is cut at 4 s, so it is the pings, not a lax proxy, that keep the client alive.
    broker = BrokerProcess(tmp_path / "broker", "[limits]\nmax_keepalive = 2\n",
                           websockets=True).start()
    nginx = ws_nginx(tmp_path / "nginx", broker.config_path)
    try:
        conf = (nginx.workdir / "greenfly.conf").read_text()
        assert "proxy_read_timeout 4s;  # 4 s = 2 x max_keepalive 2 s" in conf
        nginx.start()
        probe = subprocess.Popen([sys.executable, "-m", "broker", "probe", "--idle", "8",
                                  f"ws://127.0.0.1:{nginx.port}/mqtt"], cwd=REPO,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        client = paho_via(nginx.port, "websockets", client_id=unique("ka2"), keepalive=2)
        assert client.connect()[1] == 0
        with pytest.raises(queue.Empty):  # no disconnect within 10 s
            client.disconnects.get(timeout=10)
        assert client.connects.empty()  # and so no reconnect either
        assert f"client disconnected: {client.client_id}" not in broker.log_text()
        client.disconnect()
        out, _ = probe.communicate(timeout=10)
        assert re.search(r"closed by the path after [34]\.\d s idle", out), out
    finally:
        nginx.stop()
        broker.stop()

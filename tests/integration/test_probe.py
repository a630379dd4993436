"""`greenfly probe URL` against the broker directly and through a badly configured nginx: it
reports each hop, explains refusals, tells a cut by the path from a close by the broker, and
checks that a pinging client survives."""

from __future__ import annotations

import argparse
import re
import signal
import socket
import subprocess
import sys

import pytest
from support.broker import REPO, BrokerProcess, closed_port, free_port
from support.deploy import Nginx, deploy, greenfly
from wsproto import ConnectionType, WSConnection
from wsproto import events as wse

from broker.codec import ConnAck, encode
from broker.errors import ReasonCode
from broker.tools.probe import PathClosed, ProbeFailed, Stream, connack_in, cut_report, parse_url


@pytest.fixture(scope="module")
def wsbroker(tmp_path_factory: pytest.TempPathFactory):
    proc = BrokerProcess(tmp_path_factory.mktemp("probe"), websockets=True).start()
    yield proc
    proc.stop()


def probe(*args: str) -> subprocess.CompletedProcess:
    return greenfly("probe", *args, check=False)


def test_mqtt_url_reports_tcp_and_connack(wsbroker):
    result = probe(f"mqtt://127.0.0.1:{wsbroker.port}", "-i", "probe-mqtt")
    assert result.returncode == 0, result.stdout
    assert re.search(rf"tcp: connected to 127\.0\.0\.1:{wsbroker.port} in [\d.]+ ms",
                     result.stdout)
    assert re.search(r"mqtt: CONNACK accepted in [\d.]+ ms, session present 0, keepalive 0, "
                     r"client id probe-mqtt", result.stdout)
    wsbroker.wait_for_log(r"client disconnected: probe-mqtt .*reason=client DISCONNECT")


def test_ws_url_reports_the_upgrade_and_subprotocol(wsbroker):
    result = probe(f"ws://127.0.0.1:{wsbroker.ws_port}/mqtt")
    assert result.returncode == 0, result.stdout
    assert re.search(r"websocket: GET /mqtt -> 101 in [\d.]+ ms, subprotocol mqtt", result.stdout)


def test_refusals_are_explained(wsbroker):
    wrong_path = probe(f"ws://127.0.0.1:{wsbroker.ws_port}/nowhere")
    assert wrong_path.returncode == 1
    assert "GET /nowhere -> HTTP 404: nothing serves this path" in wrong_path.stdout
    with closed_port() as port:
        closed = probe(f"mqtt://127.0.0.1:{port}")
    assert closed.returncode == 1 and "tcp: cannot connect to" in closed.stdout


def test_anonymous_refused_says_credentials_are_wanted(tmp_path):
    # Over WebSockets the refusing CONNACK and the close frame come in one read: the CONNACK
    # is still the answer, not "the connection ended before CONNACK".
    broker = BrokerProcess(tmp_path, "[broker]\nallow_anonymous = false\n",
                           websockets=True).start()
    try:
        for url in (f"mqtt://127.0.0.1:{broker.port}",
                    f"ws://127.0.0.1:{broker.ws_port}/mqtt"):
            result = probe(url)
            assert result.returncode == 1
            assert "CONNACK refused: not authorized: this broker wants a user name (-u/-P)" \
                in result.stdout, (url, result.stdout)
    finally:
        broker.stop()


def test_a_proxy_without_the_upgrade_headers_is_named(wsbroker, tmp_path):
    # What made MQTT.js fail to connect at all behind a hand-written nginx config.
    port = free_port()
    conf = "\n".join(line for line in deploy("nginx", wsbroker.config_path, "--listen",
                                             f"127.0.0.1:{port}", "--no-tls").splitlines()
                     if "Upgrade" not in line and "Connection" not in line)
    nginx = Nginx(tmp_path / "nginx", http=conf + "\n", ports=(port,)).start()
    try:
        result = probe(f"ws://127.0.0.1:{port}/mqtt")
        assert result.returncode == 1
        assert "GET /mqtt -> HTTP 400: the upgrade did not reach a WebSocket server" \
            in result.stdout, result.stdout
    finally:
        nginx.stop()


def test_idle_connection_left_open_shows_progress_and_passes(wsbroker):
    result = probe("--idle", "1.5", f"ws://127.0.0.1:{wsbroker.ws_port}/mqtt")
    assert result.returncode == 0, result.stdout
    assert "still open after 1.5 s idle: nothing on the path cut an idle connection" \
        in result.stdout
    assert "  idle: 0 s of 1.5 s, still open" in result.stderr


def test_a_close_by_the_broker_is_not_blamed_on_the_path(tmp_path):
    broker = BrokerProcess(tmp_path, websockets=True).start()
    proc = subprocess.Popen([sys.executable, "-m", "broker", "probe", "--idle", "20",
                             f"ws://127.0.0.1:{broker.ws_port}/mqtt"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        broker.wait_for_log(r"client connected: greenfly-probe-")
        broker.signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    finally:
        proc.kill()
        broker.stop()
    assert proc.returncode == 1
    assert re.search(r"closed by the broker after [\d.]+ s idle \(WebSocket close 1001\): "
                     r"not an idle timeout", out), out


def test_a_pinging_client_survives_with_its_round_trips(wsbroker):
    result = probe("--keepalive", "1", "--duration", "2.5", f"mqtt://127.0.0.1:{wsbroker.port}")
    assert result.returncode == 0, result.stdout
    assert re.search(r"survived 2\.5 s with keepalive 1: 2 pings answered, round trip at most "
                     r"[\d.]+ ms", result.stdout), result.stdout


@pytest.mark.parametrize("args", [["--duration", "5", "mqtt://127.0.0.1"],
                                  ["http://127.0.0.1/"], ["--idle", "1", "--duration", "1",
                                                          "--keepalive", "1", "mqtt://x"]])
def test_bad_usage_exits_2(args):
    assert probe(*args).returncode == 2


def test_urls_get_default_ports_and_path():
    assert parse_url("wss://mqtt.example.com") == parse_url("wss://mqtt.example.com:443/mqtt")
    assert parse_url("mqtts://h").port == 8883 and parse_url("mqtt://h").port == 1883
    assert parse_url("ws://h:8080/a?x=1").path == "/a?x=1"


def test_the_advice_depends_on_the_clients_keepalive_and_the_hop():
    ws, tcp = parse_url("ws://h/mqtt"), parse_url("mqtts://h")
    assert cut_report(60.1, PathClosed("closed"), ws, 30) == (
        "closed by the path after 60.1 s idle: a proxy idle timeout of about 60 s; enough for "
        "clients with keepalive 30 (it needs to be over 45 s)")
    assert cut_report(60.1, PathClosed("reset"), tcp, 60).endswith(
        "with keepalive 60 it needs to be over 90 s: raise proxy_timeout (nginx stream) or the "
        "idle timeout of the proxy or NAT")
    assert cut_report(3.0, PathClosed("closed", 1001), ws, 30).startswith(
        "closed by the broker after 3.0 s idle (WebSocket close 1001)")


def test_a_connack_that_comes_with_the_close_frame_is_read_first():
    # What a refused login through a proxy looks like: nginx reads the broker's CONNACK and
    # its close frame together and writes them in one segment. A real socket pair carries
    # exactly those bytes, as the broker's WebSocket side frames them.
    client_sock, server_sock = socket.socketpair()
    server = WSConnection(ConnectionType.SERVER)
    stream = Stream(client_sock)
    target = parse_url("ws://127.0.0.1:9001/mqtt")
    with client_sock, server_sock:
        client = WSConnection(ConnectionType.CLIENT)
        server.receive_data(client.send(wse.Request(host="h", target="/mqtt",
                                                    subprotocols=["mqtt"])))
        request = next(server.events())
        client_sock.setblocking(True)
        server_sock.sendall(server.send(wse.AcceptConnection(subprotocol=request.subprotocols[0])))
        client.receive_data(client_sock.recv(65536))
        assert isinstance(next(client.events()), wse.AcceptConnection)
        stream.ws = client
        refusal = encode(ConnAck(ReasonCode.NOT_AUTHORIZED), 4)
        server_sock.sendall(server.send(wse.BytesMessage(refusal))
                            + server.send(wse.CloseConnection(1000)))
        args = argparse.Namespace(client_id="c", username=None, password=None, timeout=5)
        with pytest.raises(ProbeFailed, match="CONNACK refused: not authorized"):
            connack_in(stream, target, args, 0, lambda line: None)

"""The operator endpoints behind the kit's nginx: `greenfly deploy nginx --expose-status`
proxies /metrics, the admin API and the status page to the http listener, and a request that
came through nginx needs the bearer token even though nginx connects from loopback (where a
direct request may read without one). Without the option nginx passes none of them.

The client table through that nginx names a WebSocket client by its own address (the test's
client binds 127.0.0.2), not nginx's 127.0.0.1.
"""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from support.broker import BrokerProcess, free_port
from support.clients import PahoClient, unique
from support.deploy import Nginx, deploy, greenfly
from support.http import request

TOKEN = "a-token-for-the-nginx-tests"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("status-behind-nginx")
    (work / "token").write_text(TOKEN + "\n")
    ws, http = free_port(), free_port()
    config = (f'[broker]\ndata_dir = "{work}/data"\n'
              '[[listener]]\nbind = "127.0.0.1"\nport = 0\nprotocol = "mqtt"\n'
              f'[[listener]]\nbind = "127.0.0.1"\nport = {ws}\nprotocol = "websockets"\n'
              'path = "/mqtt"\ntrusted_proxies = ["127.0.0.1"]\n'
              f'[[listener]]\nbind = "127.0.0.1"\nport = {http}\nprotocol = "http"\n'
              f'token_file = "{work}/token"\n')
    proc = BrokerProcess(work, config_text=config).start()
    yield proc
    proc.stop()


def front(broker: BrokerProcess, workdir, *options: str) -> Nginx:
    port = free_port()
    conf = deploy("nginx", broker.config_path, "--listen", f"127.0.0.1:{port}", "--no-tls",
                  *options)
    return Nginx(workdir, http=conf, ports=(port,)).start()


@pytest.fixture(scope="module")
def exposed(broker, tmp_path_factory: pytest.TempPathFactory):
    nginx = front(broker, tmp_path_factory.mktemp("nginx-exposed"), "--expose-status")
    yield f"http://127.0.0.1:{nginx.port}"
    nginx.stop()


def test_through_nginx_every_operator_endpoint_needs_the_token(broker, exposed):
    direct = f"http://127.0.0.1:{broker.port_of('http')}"
    assert request(f"{direct}/api/v1/clients").status == 200  # loopback reads stay open
    for path in ("/metrics", "/api/v1/clients", "/api/v1/overview", "/", "/status.js"):
        assert request(f"{exposed}{path}").status == 401, path
        assert request(f"{exposed}{path}", token="wrong").status == 401, path
        assert request(f"{exposed}{path}", token=TOKEN).status == 200, path
    assert b"greenfly_clients_connected" in request(f"{exposed}/metrics", token=TOKEN).body


def test_a_forwarded_request_cannot_pass_for_a_local_one(broker, exposed):
    # What a client might send to look local: nginx still appends the address it saw, and
    # greenfly treats any request a proxy forwarded as remote.
    for header in ({"X-Forwarded-For": "127.0.0.1"}, {"X-Real-IP": "127.0.0.1"}, {}):
        req = urllib.request.Request(f"{exposed}/api/v1/clients", headers=header)
        try:
            urllib.request.urlopen(req, timeout=10)
            status = 200
        except urllib.error.HTTPError as exc:
            status = exc.code
        assert status == 401, header


def test_the_client_table_shows_the_address_behind_nginx(broker, exposed):
    client_id = unique("behind-nginx")
    client = PahoClient(int(exposed.rsplit(":", 1)[1]), client_id=client_id,
                        transport="websockets", bind_address="127.0.0.2")
    assert client.connect()[1] == 0
    try:
        table = request(f"{exposed}/api/v1/clients?q={client_id}", token=TOKEN).json()
        [row] = table["items"]
        assert row["address"].split(":")[0] == "127.0.0.2", row
        assert row["transport"] == "ws"
    finally:
        client.disconnect()


def test_without_the_option_nginx_passes_no_operator_endpoint(broker, tmp_path):
    nginx = front(broker, tmp_path / "nginx")
    try:
        for path in ("/metrics", "/api/v1/clients", "/"):
            reply = request(f"http://127.0.0.1:{nginx.port}{path}", token=TOKEN)
            # nginx's own answer (its default root here has nothing), not greenfly's
            assert reply.status in (403, 404) and b"greenfly" not in reply.body, path
    finally:
        nginx.stop()


def test_expose_status_needs_an_http_listener(tmp_path):
    config = tmp_path / "greenfly.toml"
    config.write_text(f'[broker]\ndata_dir = "{tmp_path}/data"\n'
                      '[[listener]]\nport = 9001\nprotocol = "websockets"\n')
    result = greenfly("deploy", "nginx", "-c", str(config), "--expose-status", check=False)
    assert result.returncode == 2 and "no http listener" in result.stderr, result.stderr
    other = greenfly("deploy", "systemd", "-c", str(config), "--expose-status", check=False)
    assert "--expose-status does not apply to systemd" in other.stderr

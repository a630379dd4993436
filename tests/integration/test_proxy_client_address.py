"""Who the client is behind a proxy, through the real nginx that `greenfly deploy` renders.

- WebSocket through `greenfly deploy nginx`: a client that sends its own `X-Forwarded-For`
  (MQTT.js with forged headers) is logged, slowed down and judged by the address nginx saw,
  never by the address it wrote. The client binds 127.0.0.2, so its real address differs from
  nginx's 127.0.0.1.
- TCP through `greenfly deploy nginx-stream` (Debian's stream module) to a `proxy_protocol =
  true` listener: nginx's PROXY header names the device, and the broker logs it (connected,
  refused, slowed down), not nginx's 127.0.0.1.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from support.broker import BrokerProcess, free_port
from support.clients import RawClient, unique
from support.deploy import Nginx, deploy, ws_nginx

from broker.codec import ConnAck

CLIENT_ADDRESS = "127.0.0.2"  # the device; nginx and the broker talk over 127.0.0.1


@pytest.fixture(scope="module")
def password_file(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("passwords") / "passwords"
    subprocess.run([sys.executable, "-m", "broker", "passwd", "-I", "1000", "-c", "-b",
                    str(path), "alice", "wonderland"], check=True, capture_output=True,
                   timeout=60)
    return path


@pytest.fixture(scope="module")
def secured(password_file, tmp_path_factory: pytest.TempPathFactory):
    proc = BrokerProcess(tmp_path_factory.mktemp("secured"),
                         f'[broker]\npassword_file = "{password_file}"\nallow_anonymous = false\n',
                         websockets=True).start()
    yield proc
    proc.stop()


PROXIED_LISTENER = ('[[listener]]\nbind = "127.0.0.1"\nport = 0\nprotocol = "mqtt"\n'
                    "proxy_protocol = true\n")


@pytest.fixture(scope="module")
def proxied(password_file, tmp_path_factory: pytest.TempPathFactory):
    """A broker whose second mqtt listener takes the PROXY protocol (and gets nginx-stream)."""
    proc = BrokerProcess(tmp_path_factory.mktemp("proxied"),
                         f'[broker]\npassword_file = "{password_file}"\n'
                         f"allow_anonymous = false\n{PROXIED_LISTENER}").start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def stream_nginx(proxied, tmp_path_factory: pytest.TempPathFactory):
    port = free_port()
    conf = deploy("nginx-stream", proxied.config_path, "--listen", f"127.0.0.1:{port}",
                  "--no-tls")
    assert "proxy_protocol on;" in conf
    front = Nginx(tmp_path_factory.mktemp("nginx-stream"), stream=conf, ports=(port,)).start()
    yield front
    front.stop()


@pytest.fixture(scope="module")
def nginx(secured, tmp_path_factory: pytest.TempPathFactory):
    front = ws_nginx(tmp_path_factory.mktemp("nginx"), secured.config_path).start()
    yield front
    front.stop()


def test_a_forged_x_forwarded_for_through_nginx_is_not_the_logged_address(secured, nginx,
                                                                         mqttjs):
    secured.mark_log()
    for forged in ("198.51.100.1", "198.51.100.2"):
        client_id = unique("forger")
        js = mqttjs()
        js.send("connect", url=f"ws://127.0.0.1:{nginx.port}/mqtt", options={
            "clientId": client_id, "username": "alice", "password": "guess",
            "wsOptions": {"headers": {"X-Forwarded-For": forged},
                          "localAddress": CLIENT_ADDRESS}})
        assert js.next_event("error")["code"] == 4  # bad user name or password
        line = secured.wait_for_log(rf"connection refused: {client_id} from (\S+): .*")
        assert line.group(1) == CLIENT_ADDRESS, line.group(0)
    assert "198.51.100" not in secured.log_text()


def test_the_device_address_through_nginx_stream_is_logged(proxied, stream_nginx):
    client_id = unique("device")
    device = RawClient(stream_nginx.port, source=CLIENT_ADDRESS)
    assert device.connect(client_id, username="alice", password=b"wonderland") == \
        ConnAck(0, False)
    proxied.wait_for_log(rf"client connected: {client_id} from 127\.0\.0\.2:\d+ ")


def test_wrong_passwords_through_nginx_stream_are_judged_by_the_device_address(proxied,
                                                                              stream_nginx):
    client_id = unique("guesser")
    device = RawClient(stream_nginx.port, source=CLIENT_ADDRESS)
    assert device.connect(client_id, username="alice", password=b"guess").reason_code == 0x86
    line = proxied.wait_for_log(rf"connection refused: {client_id} from (\S+): .*")
    assert line.group(1).startswith(f"{CLIENT_ADDRESS}:"), line.group(0)
    assert f"from {CLIENT_ADDRESS}" in line.group(0).split(": ", 2)[-1]  # the slow-down's count

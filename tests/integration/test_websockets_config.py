"""The WebSocket listener's configuration: keys, defaults, and errors that say what is wrong.

`greenfly check -c FILE` runs as a subprocess, as a person would run it.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from support.broker import REPO

from broker.config.loading import load_default
from broker.config.schema import ListenerSection


def check(tmp_path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "greenfly.toml"
    path.write_text(text)
    return subprocess.run([sys.executable, "-m", "broker", "check", "-c", str(path)],
                          capture_output=True, text=True, timeout=30, cwd=REPO)


def test_embedded_default_serves_websockets_on_9001_at_mqtt_beside_tcp_1883_and_http_8080():
    listeners = load_default().listeners
    assert [(x.protocol, x.bind, x.port) for x in listeners] == [
        ("mqtt", "127.0.0.1", 1883), ("websockets", "127.0.0.1", 9001),
        ("http", "127.0.0.1", 8080)]
    assert listeners[1].path == ("/mqtt",)
    assert listeners[1].trusted_proxies == ("127.0.0.1", "::1")


def test_listener_defaults_are_path_mqtt_and_loopback_proxies():
    section = ListenerSection(protocol="websockets")
    assert section.path == ("/mqtt",) and section.trusted_proxies == ("127.0.0.1", "::1")


def test_check_describes_a_websocket_listener_with_its_paths(tmp_path):
    result = check(tmp_path, '[[listener]]\nport = 9001\nprotocol = "websockets"\n'
                             'path = ["/mqtt", "/ws"]\ntrusted_proxies = ["10.0.0.0/8"]\n')
    assert result.returncode == 0, result.stderr
    assert "websockets on 127.0.0.1:9001 at /mqtt, /ws" in result.stdout


@pytest.mark.parametrize(("body", "line", "key", "says"), [
    ('port = 1883\npath = "/mqtt"', 3, "listener[0].path",
     'only a websockets listener has this key; add protocol = "websockets"'),
    ('port = 1883\nprotocol = "mqtt"\ntrusted_proxies = []', 4, "listener[0].trusted_proxies",
     "an mqtt listener believes proxies only with proxy_protocol = true"),
    ('port = 9001\nprotocol = "websockets"\nproxy_protocol = true', 4,
     "listener[0].proxy_protocol", "websockets listeners take the client's address from "
     "X-Forwarded-For"),
    ('port = 1883\nproxy_protocol = "yes"', 3, "listener[0].proxy_protocol",
     "expected true or false"),
    ('port = 9001\nprotocol = "websockets"\npath = "mqtt"', 4, "listener[0].path",
     "expected a URL path such as \"/mqtt\""),
    ('port = 9001\nprotocol = "websockets"\npath = []', 4, "listener[0].path",
     "or a non-empty list of them"),
    ('port = 9001\nprotocol = "websockets"\ntrusted_proxies = ["127.0.0.1", "proxy.local"]', 4,
     "listener[0].trusted_proxies", "got 'proxy.local' (str) in it"),
    ('port = 9001\nprotocol = "websockets"\ntrusted_proxies = "127.0.0.1"', 4,
     "listener[0].trusted_proxies", "expected a list of IP addresses or networks"),
    ('port = 9001\nprotocol = "websocket"', 3, "listener[0].protocol",
     "expected one of 'mqtt', 'websockets'"),
    ('port = 9001\nprotocol = "websockets"\npaths = ["/mqtt"]', 4, "listener[0].paths",
     "unknown key; expected one of "),
])
def test_bad_listener_keys_stop_with_file_line_key_and_reason(tmp_path, body, line, key, says):
    result = check(tmp_path, f"[[listener]]\n{body}\n")
    assert result.returncode == 2
    assert f"greenfly.toml:{line}: {key}: " in result.stderr
    assert says in result.stderr
    if says.startswith("unknown key"):  # the list names every key; these must be among them
        assert ", path, port, protocol, " in result.stderr and "trusted_proxies" in result.stderr


def test_broker_refuses_to_start_on_a_path_for_an_mqtt_listener(tmp_path):
    path = tmp_path / "greenfly.toml"
    path.write_text('[[listener]]\nport = 0\npath = "/mqtt"\n')
    result = subprocess.run([sys.executable, "-m", "broker", "-c", str(path)],
                            capture_output=True, text=True, timeout=30, cwd=REPO)
    assert result.returncode == 2
    assert "listener[0].path: only a websockets listener has this key" in result.stderr

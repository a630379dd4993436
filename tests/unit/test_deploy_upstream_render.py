"""`greenfly deploy nginx|nginx-stream --upstream`: the nginx files for several nodes.

Run as a user runs it (`broker.cli.main`), in-process: what it prints on stdout and stderr,
and its exit status. tests/integration/test_deploy_upstream.py runs the files in nginx.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.cli import main

LISTENERS = ('[[listener]]\nbind = "127.0.0.1"\nport = 1884\nproxy_protocol = true\n'
             'trusted_proxies = ["127.0.0.1"]\n'
             '[[listener]]\nbind = "127.0.0.1"\nport = 9002\nprotocol = "websockets"\n'
             'trusted_proxies = ["127.0.0.1"]\n')
HTTP = '[[listener]]\nbind = "127.0.0.1"\nport = 8081\nprotocol = "http"\n'
WHY = "600 s = 2 x max_keepalive 300 s: above the 450 s (1.5 x 300 s)"
NODES = ("127.0.0.1:9002", "127.0.0.1:9003", "127.0.0.1:9004")


def config(tmp_path: Path, http: bool = True) -> str:
    path = tmp_path / "n1.toml"
    path.write_text(f'[broker]\ndata_dir = "{tmp_path}/data"\nallow_anonymous = false\n'
                    "[limits]\nmax_keepalive = 300\n" + LISTENERS + (HTTP if http else ""))
    return str(path)


def deploy(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["deploy", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def upstream_block(text: str, name: str) -> list[str]:
    start = text.index(f"upstream {name} {{")
    return [line.strip() for line in text[start:text.index("}", start)].splitlines()[1:]
            if line.strip() and not line.strip().startswith("#")]


def test_nginx_lists_every_node_by_least_conn_with_passive_checks(tmp_path, capsys):
    status, out, _ = deploy(capsys, "nginx", "-c", config(tmp_path), "--no-tls",
                            "--upstream", ",".join(NODES[:2]), "--upstream", NODES[2])
    assert status == 0
    assert upstream_block(out, "greenfly_websockets") == ["least_conn;"] + [
        f"server {node} max_fails=1 fail_timeout=5s;" for node in NODES]
    assert "open-source nginx has no active ones" in out
    assert "passed to the WebSocket listeners of 3 greenfly nodes" in out
    # Every rule of the single-node file still holds, for each node.
    assert f"proxy_read_timeout 600s;  # {WHY}" in out
    assert f"proxy_send_timeout 600s;  # {WHY}" in out
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in out
    assert "proxy_set_header Upgrade $http_upgrade;" in out
    assert "proxy_pass http://greenfly_websockets;" in out


def test_readyz_is_named_and_health_check_left_commented_for_nginx_plus(tmp_path, capsys):
    _, out, _ = deploy(capsys, "nginx", "-c", config(tmp_path), "--upstream", ",".join(NODES))
    assert "        # health_check uri=/readyz port=8081;\n" in out
    assert "GET /readyz on its http listener (this configuration's\n        # is 127.0.0.1:8081)" \
        in out
    assert "\n        health_check" not in out  # OSS nginx would refuse it
    _, stream, _ = deploy(capsys, "nginx-stream", "-c", config(tmp_path), "--no-tls",
                          "--upstream", "127.0.0.1:1884,127.0.0.1:1885")
    assert "#     health_check port=8081 match=greenfly_ready;" in stream
    assert '#     match greenfly_ready { send "GET /readyz HTTP/1.0\\r\\n\\r\\n";' in stream


def test_without_an_http_listener_the_file_says_to_add_one(tmp_path, capsys):
    _, out, _ = deploy(capsys, "nginx", "-c", config(tmp_path, http=False),
                       "--upstream", ",".join(NODES))
    assert "give the nodes an http" in out and "health_check" not in out


def test_stream_keeps_the_proxy_protocol_and_timeouts_for_every_node(tmp_path, capsys):
    nodes = ("127.0.0.1:1884", "127.0.0.1:1885", "[::1]:1886", "node4.internal:1884")
    status, out, _ = deploy(capsys, "nginx-stream", "-c", config(tmp_path), "--no-tls",
                            "--upstream", " , ".join(nodes))
    assert status == 0
    assert upstream_block(out, "greenfly_mqtt") == ["least_conn;"] + [
        f"server {node} max_fails=1 fail_timeout=5s;" for node in nodes]
    assert "    proxy_protocol on;\n" in out
    assert f"proxy_timeout 600s;  # {WHY}" in out
    assert "passes the client to the next one" in out


def test_without_upstream_the_file_names_the_local_listener_only(tmp_path, capsys):
    _, out, _ = deploy(capsys, "nginx-stream", "-c", config(tmp_path), "--no-tls")
    assert upstream_block(out, "greenfly_mqtt") == ["server 127.0.0.1:1884;"]
    assert "least_conn" not in out and "readyz" not in out
    assert "greenfly runs on this machine" in out


@pytest.mark.parametrize(("tool", "value", "says"), [
    ("nginx", "127.0.0.1", "expected HOST:PORT"),
    ("nginx", "9002", "expected HOST:PORT"),
    ("nginx", "127.0.0.1:0", "port 0 is not in 1..65535"),
    ("nginx-stream", "127.0.0.1:70000", "port 70000 is not in 1..65535"),
    ("nginx-stream", "127.0.0.300:1884", "'127.0.0.300' is not an IPv4 address"),
    ("nginx", "[::g]:9002", "'::g' is not an IPv6 address"),
    ("nginx", "127.0.0.1:9002,127.0.0.1:9002", "'127.0.0.1:9002' is given twice"),
    ("nginx", "127.0.0.1:9002,", "expected HOST:PORT"),
    ("nginx", "host name:9002", "expected HOST:PORT"),
    ("systemd", "127.0.0.1:9002", "--upstream does not apply to systemd"),
    ("supervisor", "127.0.0.1:9002", "--upstream does not apply to supervisor"),
    ("frpc", "127.0.0.1:9002", "--upstream does not apply to frpc"),
    ("frps", "127.0.0.1:9002", "--upstream does not apply to frps"),
])
def test_what_cannot_work_is_refused_with_a_reason(tmp_path, capsys, tool, value, says):
    status, out, err = deploy(capsys, tool, "-c", config(tmp_path), "--upstream", value)
    assert (status, out) == (2, "") and says in err, err

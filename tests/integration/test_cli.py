"""The `greenfly` command: config errors that name file, line and key; `check`; signals."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest
from support.broker import BrokerProcess
from support.clients import PahoClient, RawClient, unique

from broker.codec import ConnAck

GREENFLY = [sys.executable, "-m", "broker"]

ISSUE_SAMPLE = """\
[broker]
data_dir = "{data}"
sys_interval = 10
connect_timeout = 10
allow_anonymous = true

[limits]
max_keepalive = 65535
max_inflight_messages = 20
max_queued_messages = 1000
max_queued_bytes = 0
max_packet_size = 268435455

[[listener]]
bind = "127.0.0.1"
port = {port}
protocol = "mqtt"

[log]
level = "info"
"""


def _run(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([*GREENFLY, *args], capture_output=True, text=True, timeout=timeout)


def test_the_sample_config_from_the_issue_works_as_written(tmp_path):
    config = ISSUE_SAMPLE.format(data=tmp_path / "data", port=0)  # the broker picks the port
    proc = BrokerProcess(tmp_path, config_text=config).start()
    client = PahoClient(proc.port)
    assert client.connect() == (False, 0)
    client.disconnect()
    proc.stop()


def test_check_accepts_a_good_file_and_says_what_it_would_listen_on(tmp_path):
    path = tmp_path / "ok.toml"
    path.write_text(ISSUE_SAMPLE.format(data=tmp_path, port=18990))
    result = _run("check", "-c", str(path))
    assert result.returncode == 0, result.stderr
    assert "mqtt on 127.0.0.1:18990" in result.stdout


@pytest.mark.parametrize(("text", "expected"), [
    ("[[listener]]\nport = 70000\n",
     r"bad.toml:2: listener\[0\].port: expected an integer in 0..65535, got 70000"),
    ("[broker]\nsys_interval = 10\nallow_anonymous = \"yes\"\n",
     r"bad.toml:3: broker.allow_anonymous: expected true or false, got 'yes'"),
    ("[broker]\ndata_dir = \"x\"\n\n[limits]\nmax_inflight = 5\n",
     r"bad.toml:5: limits.max_inflight: unknown key; expected one of .*max_inflight_messages"),
    ("[brokr]\n", r"bad.toml:1: brokr: unknown section \[brokr\]"),
    ("[broker]\nsys_interval = \n", r"bad.toml:2: not valid TOML"),
    ("[[listener]]\nport = 1883\n[[listener]]\nport = 1884\nprotocol = \"amqp\"\n",
     r"bad.toml:5: listener\[1\].protocol: expected one of 'mqtt'"),
    ("[log]\nlevel = \"loud\"\n", r"bad.toml:2: log.level: expected one of 'debug', 'info'"),
])
def test_bad_config_names_file_line_and_key(tmp_path, text, expected):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    checked = _run("check", "-c", str(path))
    assert checked.returncode == 2
    assert re.search(expected, checked.stderr), checked.stderr
    started = _run("-c", str(path))  # the broker refuses to start with the same message
    assert started.returncode == 2
    assert re.search(expected, started.stderr), started.stderr
    assert "Traceback" not in started.stderr


def test_missing_config_file_is_a_clear_error(tmp_path):
    result = _run("-c", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert "nope.toml: cannot read the file: No such file or directory" in result.stderr


def test_sigterm_stops_gracefully_within_seconds(broker_factory):
    proc = broker_factory()
    clients = [RawClient(proc.port) for _ in range(3)]
    for client in clients:
        assert client.connect(unique()) == ConnAck(0, False)
    start = time.monotonic()
    proc.signal(signal.SIGTERM)
    assert proc.proc.wait(10) == 0
    assert time.monotonic() - start < 3
    for client in clients:
        assert client.closed_by_broker(1)
    log = proc.log_text()
    assert "shutting down: closing 3 connection(s)" in log
    assert log.count("reason=server shutdown") == 3
    assert "stopped" in log


def test_sighup_reloads_limits_and_keeps_clients_connected(broker_factory):
    proc = broker_factory("[limits]\nmax_keepalive = 100\n")
    client = PahoClient(proc.port, keepalive=60)
    client.connect()
    text = proc.config_path.read_text().replace("max_keepalive = 100", "max_keepalive = 30")
    proc.config_path.write_text(text)
    proc.mark_log()
    proc.signal(signal.SIGHUP)
    proc.wait_for_log(r"configuration reloaded")
    refused = RawClient(proc.port)
    assert refused.connect(unique(), keepalive=60).reason_code == 0x85
    topic = f"{unique('hup')}/t"
    client.subscribe(topic, 1)
    client.publish(topic, b"same socket", qos=1)
    assert client.expect(1)[0].payload == b"same socket"
    assert client.disconnects.empty()
    proc.config_path.write_text(text.replace("max_keepalive = 30", "max_keepalive = -1"))
    proc.mark_log()
    proc.signal(signal.SIGHUP)
    proc.wait_for_log(r"SIGHUP: keeping the running configuration: .*max_keepalive")
    client.disconnect()

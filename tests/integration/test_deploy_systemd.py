"""systemd: `systemd-analyze verify` accepts the rendered unit, and the broker speaks systemd's
notification protocol (sd_notify) on a datagram socket the test owns, as a `Type=notify`
service would: READY=1 only once its ports accept, STOPPING=1 on SIGTERM, RELOADING=1 then
READY=1 around SIGHUP, and WATCHDOG=1 at half the watchdog interval."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from support.broker import BrokerProcess
from support.clients import RawClient, unique
from support.deploy import deploy, installed_layout, need_program

from broker.codec import ConnAck


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request):
    """(socket, NOTIFY_SOCKET value): a file socket, or an abstract one written '@name'."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    directory = None
    if request.param == "path":
        directory = tempfile.mkdtemp(prefix="gf-notify-", dir="/tmp")  # short: sun_path limit
        address = f"{directory}/notify"
        sock.bind(address)
    else:
        name = f"greenfly-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name)
        address = "@" + name
    sock.settimeout(15)
    yield sock, address
    sock.close()
    if directory:
        shutil.rmtree(directory, ignore_errors=True)


def start_notifying(workdir: Path, address: str, **env: str) -> BrokerProcess:
    environ = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "", "WATCHDOG_PID": "", **env}
    return BrokerProcess(workdir, websockets=True, env=environ).start(wait=False)


def messages(sock: socket.socket, count: int) -> list[str]:
    return [sock.recv(4096).decode() for _ in range(count)]


def test_ready_only_once_ports_accept_then_stopping_on_sigterm(tmp_path, notify_socket):
    sock, address = notify_socket
    broker = start_notifying(tmp_path, address)
    try:
        ready = sock.recv(4096).decode()
        # The moment READY=1 arrives, both listeners accept: no retry, no wait.
        for port in (broker.port, broker.ws_port):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        assert ready.split("\n")[0] == "READY=1"
        assert f"STATUS=mqtt on 127.0.0.1:{broker.port}" in ready
        assert RawClient(broker.port).connect(unique()) == ConnAck(0, False)
        broker.signal(signal.SIGTERM)
        assert sock.recv(4096).decode().split("\n")[0] == "STOPPING=1"
        assert broker.proc.wait(10) == 0
    finally:
        broker.stop()


def test_no_ready_when_a_listener_cannot_open(tmp_path, notify_socket):
    # A READY=1 sent before the listeners open would arrive here before the broker gives up.
    sock, address = notify_socket
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    config = (f'[broker]\ndata_dir = "{tmp_path}/data"\n\n[[listener]]\nport = 0\n\n'
              f'[[listener]]\nport = {taken.getsockname()[1]}\nprotocol = "websockets"\n')
    broker = BrokerProcess(tmp_path, config_text=config,
                           env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": ""})
    try:
        broker.start(wait=False)
        assert broker.proc.wait(15) == 1
        assert "address already in use" in broker.log_text()
        sock.setblocking(False)  # the broker has exited: all it sent is queued here
        sent = []
        with pytest.raises(BlockingIOError):
            while True:
                sent.append(sock.recv(4096).decode())
        assert not [m for m in sent if m.startswith("READY=1")], sent
    finally:
        taken.close()
        broker.stop()


def test_sighup_is_bracketed_by_reloading_and_ready_even_when_the_new_file_is_bad(
        tmp_path, notify_socket):
    sock, address = notify_socket
    broker = start_notifying(tmp_path, address)
    try:
        assert messages(sock, 1)[0].startswith("READY=1")
        broker.signal(signal.SIGHUP)
        reloading, ready = messages(sock, 2)
        fields = dict(line.split("=", 1) for line in reloading.split("\n"))
        assert fields["RELOADING"] == "1"
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert 0 <= now_usec - int(fields["MONOTONIC_USEC"]) < 5_000_000
        assert ready == "READY=1"
        broker.config_path.write_text(broker.config_path.read_text() + "\n[nonsense]\n")
        broker.signal(signal.SIGHUP)
        assert [m.split("\n")[0] for m in messages(sock, 2)] == ["RELOADING=1", "READY=1"]
        broker.wait_for_log("SIGHUP: keeping the running configuration")
        assert broker.proc.poll() is None
    finally:
        broker.stop()


def test_watchdog_pings_at_half_the_interval_only_for_its_own_pid(tmp_path, notify_socket):
    sock, address = notify_socket
    broker = start_notifying(tmp_path / "mine", address, WATCHDOG_USEC="200000")
    try:
        assert messages(sock, 1)[0].startswith("READY=1")
        start = time.monotonic()
        assert messages(sock, 4) == ["WATCHDOG=1"] * 4
        assert 0.25 <= time.monotonic() - start < 1.5  # about every 0.1 s
    finally:
        broker.stop()
    while not sock.recv(4096).startswith(b"STOPPING=1"):  # pings sent before the stop
        pass
    # WATCHDOG_PID naming another process: the watchdog is not this broker's to feed.
    other = start_notifying(tmp_path / "other", address, WATCHDOG_USEC="200000",
                            WATCHDOG_PID="1")
    try:
        assert messages(sock, 1)[0].startswith("READY=1")
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(4096)
    finally:
        other.stop()


def verify(unit: Path) -> subprocess.CompletedProcess:
    return subprocess.run([need_program("systemd-analyze"), "verify", str(unit)],
                          capture_output=True, text=True, timeout=60)


def test_systemd_analyze_verify_accepts_the_rendered_unit(tmp_path):
    config = installed_layout(tmp_path / "root").config
    unit = tmp_path / "greenfly.service"
    unit.write_text(deploy("systemd", config, "--prefix", str(tmp_path / "root")))
    text = unit.read_text()
    assert "Type=notify" in text and "ExecReload=/bin/kill -HUP $MAINPID" in text
    result = verify(unit)
    assert result.returncode == 0, result.stderr
    assert "greenfly.service" not in result.stdout + result.stderr, result.stderr
    # The check can fail: a misspelt key is reported.
    unit.write_text(text.replace("ProtectSystem=strict", "ProtectSytem=strict"))
    assert "Unknown key" in verify(unit).stderr

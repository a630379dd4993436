"""`greenfly check` says OK only when the broker would start: it reads the journal and tries
each listener's address, and start-up names the `[[listener]]` line of a port in use."""

from __future__ import annotations

import socket
import subprocess
import sys

from support.broker import BrokerProcess

from broker.store.journal_file import HEADER, JOURNAL_NAME
from broker.store.record_codec import encode_frame
from broker.store.records import SessionOpened, Subscribed

GREENFLY = [sys.executable, "-m", "broker"]


def _config(tmp_path, second_listener: str) -> str:
    # Line 5 is listener[0].port, line 9 listener[1].bind and line 10 listener[1].port.
    return (f'[broker]\ndata_dir = "{tmp_path / "data"}"\n\n'
            '[[listener]]\nport = 0\n\n'
            '[[listener]]\nprotocol = "mqtt"\n'
            f"{second_listener}\n")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*GREENFLY, *args], capture_output=True, text=True, timeout=30)


def _start(tmp_path, config: str) -> BrokerProcess:
    proc = BrokerProcess(tmp_path / "broker", config_text=config)
    proc.start(wait=False)
    try:
        proc.proc.wait(20)
    finally:
        proc.stop()  # had it started, it must not outlive the test
    return proc


def test_a_port_in_use_fails_check_and_start_up_naming_the_listener_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        config = tmp_path / "g.toml"
        config.write_text(_config(tmp_path, f'bind = "127.0.0.1"\nport = {port}'))
        expected = (f"{config}:10: listener[1].port: cannot listen on 127.0.0.1:{port}: "
                    "address already in use")
        checked = _run("check", "-c", str(config))
        assert checked.returncode == 1
        assert expected in checked.stderr and "OK" not in checked.stdout
        proc = _start(tmp_path, config.read_text())
        assert proc.proc.returncode == 1
        assert f"cannot start: {expected.replace(str(config), str(proc.config_path))}" in \
            proc.log_text()


def test_a_bind_address_this_machine_lacks_fails_check_and_start_up(tmp_path):
    config = tmp_path / "g.toml"
    config.write_text(_config(tmp_path, 'bind = "192.0.2.1"\nport = 1883'))  # TEST-NET-1
    expected = f"{config}:9: listener[1].bind: cannot listen on 192.0.2.1:1883: "
    checked = _run("check", "-c", str(config))
    assert checked.returncode == 1
    assert expected in checked.stderr and "is 192.0.2.1 an address of this machine?" in \
        checked.stderr
    proc = _start(tmp_path, config.read_text())
    assert proc.proc.returncode == 1
    assert expected.replace(str(config), str(proc.config_path)) in proc.log_text()


def test_a_damaged_journal_fails_check_with_exit_3_and_the_salvage_command(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    frames = [encode_frame(SessionOpened("dev/1", 4, 0)), encode_frame(Subscribed("dev/1", "a", 1))]
    damaged = bytearray(HEADER + b"".join(frames) + frames[0])
    damaged[len(HEADER) + 9] ^= 0x40  # inside the first record's body: its CRC fails
    (data / JOURNAL_NAME).write_bytes(bytes(damaged))
    config = tmp_path / "g.toml"
    config.write_text(_config(tmp_path, "port = 0"))
    checked = _run("check", "-c", str(config))
    assert checked.returncode == 3
    assert f"the session journal {data / JOURNAL_NAME} is damaged at offset {len(HEADER)} " \
        "(bad CRC)" in checked.stderr
    assert f"greenfly check --salvage -c {config}" in checked.stderr
    assert "OK" not in checked.stdout


def test_check_passes_when_the_ports_are_free_and_keeps_none_of_them(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "g.toml"
    config.write_text(_config(tmp_path, f'bind = "127.0.0.1"\nport = {port}'))
    checked = _run("check", "-c", str(config))
    assert checked.returncode == 0, checked.stderr
    assert f"{config}: OK" in checked.stdout
    with socket.socket() as again:  # check let go of it
        again.bind(("127.0.0.1", port))

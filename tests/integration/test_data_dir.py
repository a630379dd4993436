"""The data directory as an unlucky operator meets it: a second broker started on it, and a
full disk. Real processes, a real lock file and a real full filesystem."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.broker import BrokerProcess
from support.clients import RawClient, publish_many, unique

from broker.codec import MQTT_5, ConnAck, Connect, Publish, SubOptions, Subscribe

GREENFLY = [sys.executable, "-m", "broker"]


def _greenfly(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*GREENFLY, *args], capture_output=True, text=True, timeout=30)


def _second_broker_on(first: BrokerProcess, workdir) -> BrokerProcess:
    config = (f'[broker]\ndata_dir = "{first.data_dir}"\n\n'
              '[[listener]]\nbind = "127.0.0.1"\nport = 0\n')
    return BrokerProcess(workdir, config_text=config)


def test_a_second_broker_on_the_same_data_dir_exits_1_naming_the_holder(broker_factory,
                                                                        tmp_path):
    first = broker_factory()
    client_id = unique("locked")
    raw = RawClient(first.port)
    assert raw.connect(client_id, clean=False) == ConnAck(0, False)
    raw.close()
    second = _second_broker_on(first, tmp_path / "second")
    second.start(wait=False)
    try:
        assert second.proc.wait(15) == 1
    finally:
        second.stop()  # had it started (the bug), it must not outlive the test
    log = second.log_text()
    assert f"is in use by another greenfly (PID {first.pid}" in log, log
    assert "listening:" not in log  # it never opened a port nor touched the journal
    # The first broker is unharmed and still has the session.
    again = RawClient(first.port)
    assert again.connect(client_id, clean=False) == ConnAck(0, True)
    again.close()


def test_inspect_and_check_read_without_the_lock_but_say_a_broker_runs(broker_factory):
    proc = broker_factory()
    inspected = _greenfly("inspect", "-d", str(proc.data_dir))
    assert inspected.returncode == 0, inspected.stderr
    assert f"a greenfly broker is running on {proc.data_dir} (PID {proc.pid})" in \
        inspected.stdout
    checked = _greenfly("check", "-c", str(proc.config_path))
    assert checked.returncode == 0, checked.stderr
    assert f"(PID {proc.pid})" in checked.stdout
    salvaged = _greenfly("check", "--salvage", "-c", str(proc.config_path))
    assert salvaged.returncode == 1
    assert f"cannot salvage: data_dir {proc.data_dir} is in use" in salvaged.stderr
    # The momentary looks above never kept the lock: the broker still holds it alone, and
    # after it stops nothing says a broker runs.
    proc.stop()
    assert "running" not in _greenfly("inspect", "-d", str(proc.data_dir)).stdout


def test_inspect_calls_sessions_online_while_their_broker_runs(broker_factory):
    proc = broker_factory()
    client_id = unique("online")
    client = RawClient(proc.port)
    assert client.connect(client_id, clean=False) == ConnAck(0, False)
    running = _greenfly("inspect", "-d", str(proc.data_dir)).stdout
    assert f"  {client_id}: online now (its broker is running)," in running, running
    assert "at the stop" not in running
    proc.kill9()  # the journal still says connected: that is what a restart would see
    stopped = _greenfly("inspect", "-d", str(proc.data_dir)).stdout
    assert f"  {client_id}: connected at the stop," in stopped, stopped
    client.close()


def test_the_lock_dies_with_the_broker_even_after_kill_9(broker_factory, tmp_path):
    first = broker_factory()
    first.kill9()
    second = _second_broker_on(first, tmp_path / "second").start()
    try:
        assert RawClient(second.port).connect(unique("after-kill")) == ConnAck(0, False)
    finally:
        second.stop()


# -- a full disk ----------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB filesystem (tmpfs; CI runs as root) for the broker's data_dir."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    assert done.returncode == 0, f"cannot mount a tmpfs (needs root): {done.stderr}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(path: Path) -> None:
    """Write `path` until the filesystem has not one byte left."""
    with open(path, "wb", buffering=0) as fh:
        for chunk in (65536, 4096, 512, 1):
            try:
                while True:
                    fh.write(b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc


@pytest.fixture
def broker_on_small_disk(small_disk: Path, tmp_path: Path) -> Iterator[BrokerProcess]:
    config = (f'[broker]\ndata_dir = "{small_disk / "data"}"\nsys_interval = 0\n\n'
              '[[listener]]\nbind = "127.0.0.1"\nport = 0\n')
    proc = BrokerProcess(tmp_path / "broker", config_text=config).start()
    yield proc
    proc.stop()  # before the filesystem goes


def test_full_disk_resumes_sessions_and_refuses_new_persistent_ones_saying_disk_full(
        broker_on_small_disk, small_disk):
    proc = broker_on_small_disk
    keeper = unique("keeper")
    topic = f"{keeper}/t"
    raw = RawClient(proc.port)
    assert raw.connect(keeper, clean=False) == ConnAck(0, False)
    raw.send_packet(Subscribe(1, ((topic, SubOptions(1)),)))
    assert raw.recv_packet().reason_codes == (1,)
    raw.close()
    proc.wait_for_log(rf"client disconnected: {keeper} ")
    publisher = RawClient(proc.port)
    publisher.connect()
    publish_many(publisher, topic, [b"before the disk filled"])
    _fill(small_disk / "filler")
    # The broker finds out at its next write: a QoS 1 message it cannot journal (bigger than
    # whatever is left of the journal's last page) is refused.
    proc.mark_log()
    publisher.send_packet(Publish(topic, b"x" * 20000, 1, packet_id=2))
    assert publisher.closed_by_broker(5)
    proc.wait_for_log(r"JOURNAL WRITE FAILED: .*No space left on device")
    # Resuming needs no new bytes on disk before its CONNACK, and gets what it was owed.
    back = RawClient(proc.port)
    assert back.connect(keeper, clean=False) == ConnAck(0, True)
    owed = back.recv_packet()
    assert isinstance(owed, Publish) and owed.payload == b"before the disk filled"
    # A new persistent session cannot be promised: 0x03 (MQTT 5: 0x97), and the log says why.
    newcomer = unique("newcomer")
    refused_v3 = RawClient(proc.port)
    refused_v3.send_packet(Connect(newcomer, clean_start=False, keepalive=60))
    assert refused_v3.recv_bytes(4) == b"\x20\x02\x00\x03"  # CONNACK 0x03
    assert refused_v3.closed_by_broker()
    proc.wait_for_log(rf"connection refused: {newcomer} .*disk full")
    v5 = RawClient(proc.port, protocol_level=MQTT_5)
    v5.send_packet(Connect(unique("v5-newcomer"), MQTT_5, True, 60,
                           properties={"session_expiry_interval": 300}), MQTT_5)
    refused = v5.recv_packet()
    assert refused.reason_code == 0x97 and "disk full" in refused.properties["reason_string"]
    assert "protocol error" not in proc.log_text()
    # Clean sessions write nothing, so they are still welcome.
    assert RawClient(proc.port).connect(unique("clean"), clean=True) == ConnAck(0, False)
    # Room again: the broker writes again by itself, and new persistent sessions are taken.
    os.unlink(small_disk / "filler")
    proc.wait_for_log(r"journal writes work again")
    assert RawClient(proc.port).connect(unique("later"), clean=False) == ConnAck(0, False)


def _long_id(prefix: str) -> str:
    """A client id whose journal records are bigger than a page: a full tmpfs may still take
    a few bytes into the journal's last page, never one of these."""
    return f"{unique(prefix)}-{'x' * 5000}"


def test_a_full_disk_nobody_noticed_yet_refuses_with_connack_and_leaves_no_session(
        broker_on_small_disk, small_disk):
    proc = broker_on_small_disk
    owner = _long_id("owner")  # a persistent session a clean start will ask to delete
    raw = RawClient(proc.port)
    assert raw.connect(owner, clean=False) == ConnAck(0, False)
    raw.close()
    proc.wait_for_log(rf"client disconnected: {owner} ")
    # A new persistent session whose own first record is the write that finds the disk full.
    _fill(small_disk / "filler")
    proc.mark_log()
    newcomer = _long_id("newcomer")
    first = RawClient(proc.port)
    first.send_packet(Connect(newcomer, clean_start=False, keepalive=60))
    assert first.recv_bytes(4) == b"\x20\x02\x00\x03"  # CONNACK 0x03, not a silent close
    assert first.closed_by_broker()
    proc.wait_for_log(r"JOURNAL WRITE FAILED: .*disk full")
    proc.wait_for_log(rf"connection refused: {newcomer} .*disk full")
    os.unlink(small_disk / "filler")
    proc.wait_for_log(r"journal writes work again")
    # A clean start that deletes a persistent session, its deletion being the failing write
    # (MQTT 5: 0x97 with a reason string).
    _fill(small_disk / "filler")
    proc.mark_log()
    v5 = RawClient(proc.port, protocol_level=MQTT_5)
    v5.send_packet(Connect(owner, MQTT_5, True, 60), MQTT_5)
    refused = v5.recv_packet()
    assert isinstance(refused, ConnAck) and refused.reason_code == 0x97, refused
    assert "disk full" in refused.properties["reason_string"]
    assert v5.closed_by_broker()
    proc.wait_for_log(rf"connection refused: {owner} .*disk full")
    os.unlink(small_disk / "filler")
    proc.wait_for_log(r"journal writes work again")
    # Nothing half-made is left, in memory or in the journal: the refused newcomer has no
    # session, and the deletion the clean start asked for is done.
    assert "protocol error" not in proc.log_text()
    proc.restart()
    for client_id in (newcomer, owner):
        again = RawClient(proc.port)
        assert again.connect(client_id, clean=False) == ConnAck(0, False), client_id
        again.close()

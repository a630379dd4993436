"""The data directory as an unlucky operator meets it: a second broker started on it, and a
full disk. Real processes, a real lock file and a real full filesystem."""

from __future__ import annotations

import subprocess
import sys

from support.broker import BrokerProcess
from support.clients import RawClient, unique

from broker.codec import ConnAck

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


def test_the_lock_dies_with_the_broker_even_after_kill_9(broker_factory, tmp_path):
    first = broker_factory()
    first.kill9()
    second = _second_broker_on(first, tmp_path / "second").start()
    try:
        assert RawClient(second.port).connect(unique("after-kill")) == ConnAck(0, False)
    finally:
        second.stop()

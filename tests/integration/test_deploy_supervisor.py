"""supervisord (Debian's supervisor package) runs the broker with the rendered
`greenfly deploy supervisor` program section: RUNNING, serving a client with the sample
config's password file, brought back after kill -9, and reloading on `supervisorctl signal HUP`.

supervisord runs in the foreground with its own configuration, socket and logs in a temp dir;
the broker is laid out as install.sh lays it out (the sample configuration, under a root).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
from support.broker import REPO, wait_for_listening
from support.clients import PahoClient, unique
from support.deploy import any_ports, deploy, need_program, wait_until


class Supervisord:
    def __init__(self, workdir: Path, program: str) -> None:
        self.workdir = workdir
        (workdir / "greenfly.conf").write_text(program)
        self.conf = workdir / "supervisord.conf"
        self.conf.write_text(
            f"[unix_http_server]\nfile={workdir}/supervisor.sock\n\n"
            f"[supervisord]\nlogfile={workdir}/supervisord.log\npidfile={workdir}/supervisord.pid\n"
            f"childlogdir={workdir}\nnodaemon=true\n\n"
            "[rpcinterface:supervisor]\n"
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n"
            f"[supervisorctl]\nserverurl=unix://{workdir}/supervisor.sock\n\n"
            f"[include]\nfiles = {workdir}/greenfly.conf\n")
        self.proc = subprocess.Popen([need_program("supervisord"), "-n", "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def log(self) -> str:
        return (self.workdir / "supervisord.log").read_text(errors="replace")

    def ctl(self, *args: str) -> str:
        result = subprocess.run([need_program("supervisorctl"), "-c", str(self.conf), *args],
                                capture_output=True, text=True, timeout=30)
        return result.stdout.strip()

    def running_pid(self) -> int | None:
        """The broker's PID while supervisord says RUNNING ("greenfly RUNNING pid 42, ..."),
        else None."""
        match = re.match(r"greenfly\s+RUNNING\s+pid (\d+),", self.ctl("status", "greenfly"))
        return int(match.group(1)) if match else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # stops its programs first (stopasgroup)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def workdir():
    # supervisord's socket path must stay short (sun_path), unlike pytest's tmp_path.
    path = Path(tempfile.mkdtemp(prefix="gf-sv-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def round_trip(port: int) -> None:
    client = PahoClient(port, client_id=unique("sv"), username="admin", password="s3cret")
    assert client.connect()[1] == 0
    topic = unique("supervisor")
    assert client.subscribe(topic, 1) == [1]
    client.publish(topic, b"under supervisord", qos=1)
    assert client.expect(1)[0].payload == b"under supervisord"
    client.disconnect()


def install_prefix(root: Path) -> Path:
    """`deploy/install.sh --prefix root` as a user runs it (first user admin/s3cret); the
    installed configuration."""
    result = subprocess.run(["sh", str(REPO / "deploy/install.sh"), "--prefix", str(root),
                             "--user", "admin", "--password", "s3cret"],
                            capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr
    return root / "etc/greenfly/greenfly.toml"


def test_a_system_install_runs_as_the_greenfly_user():
    program = deploy("supervisor", REPO / "deploy/greenfly.toml")
    assert "\nuser=greenfly\n" in program
    assert "\nstdout_logfile=/var/log/greenfly/greenfly.log\n" in program


@pytest.mark.slow
def test_supervisord_runs_restarts_after_kill_9_and_reloads_on_hup(workdir):
    # What install.sh --prefix made, and the file its greenfly renders for it, as they are:
    # no greenfly user exists there, and the log directory is the one install.sh created.
    root = workdir / "root"
    config = install_prefix(root)
    program = subprocess.run([str(root / "opt/greenfly/bin/greenfly"), "deploy", "supervisor",
                              "-c", str(config), "--prefix", str(root)],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    assert "\nuser=" not in program
    any_ports(config)
    supervisord = Supervisord(workdir, program)
    log = root / "var/log/greenfly/greenfly.log"
    try:
        try:
            wait_until(supervisord.running_pid, 15, "greenfly to be RUNNING")
        except AssertionError:
            raise AssertionError(supervisord.log()) from None
        first = supervisord.running_pid()
        [(_, port), _proxied, _ws] = wait_for_listening(log, 3)  # the config says port 0
        round_trip(port)

        seen = len(log.read_text())
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: supervisord.running_pid() not in (None, first), 15,
                   "supervisord to restart greenfly")
        second = supervisord.running_pid()
        [(_, port), _proxied, _ws] = wait_for_listening(log, 3, after=seen)  # the new run's ports
        round_trip(port)

        assert "greenfly: signalled" in supervisord.ctl("signal", "HUP", "greenfly")
        wait_until(lambda: "SIGHUP: configuration reloaded" in log.read_text(), 10,
                   "the broker to log the reload")
        assert supervisord.running_pid() == second
        round_trip(port)
    finally:
        supervisord.stop()
    with pytest.raises(ProcessLookupError):  # stopped with supervisord, not orphaned
        os.kill(second, 0)

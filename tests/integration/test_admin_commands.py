"""`greenfly clients`, `greenfly kick` and `greenfly top`, run for real against a real broker
with real clients: `top` in a pseudo-terminal, read the way a person sees it (frame by frame),
quit with `q`."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time

from support.broker import REPO, closed_port
from support.clients import PahoClient, unique
from support.paho5 import Paho5

TOKEN = "t0ken-for-the-cli"
HOME = "\x1b[H"


def http_broker(broker_factory, tmp_path, with_token: bool = True):
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    listener = '[[listener]]\nbind = "127.0.0.1"\nport = 0\nprotocol = "http"\n'
    if with_token:
        listener += f'token_file = "{token}"\n'
    return broker_factory(listener)


def greenfly(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "broker", *args], cwd=REPO, timeout=timeout,
                          capture_output=True, text=True)


def test_clients_prints_the_connected_clients_from_the_config(broker_factory, tmp_path):
    broker = http_broker(broker_factory, tmp_path)
    prefix = unique("table")
    clients = [PahoClient(broker.port, client_id=f"{prefix}-{i}", keepalive=40 + i)
               for i in range(2)]
    for client in clients:
        client.connect()
    clients[0].subscribe(f"{prefix}/x", 1)
    done = greenfly("clients", "-c", str(broker.config_path))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["CLIENT", "ID", "ADDRESS", "USER", "PROTOCOL", "KEEPALIVE",
                                "CONNECTED", "INFLIGHT", "QUEUED", "SUBS"]
    first = next(line for line in lines if line.startswith(f"{prefix}-0 "))
    assert first.split()[1].startswith("127.0.0.1:") and "MQTT 3.1.1" in first
    assert first.split()[-5:] == ["40", first.split()[-4], "0", "0", "1"]
    assert any(line.startswith(f"{prefix}-1 ") for line in lines)
    assert lines[-1] == "2 client(s) connected"
    by_url = greenfly("clients", f"http://127.0.0.1:{broker.port_of('http')}")
    assert by_url.returncode == 0 and f"{prefix}-1" in by_url.stdout
    for client in clients:
        client.disconnect()


def test_kick_disconnects_a_paho_client_and_is_refused_without_the_token(
        broker_factory, tmp_path):
    broker = http_broker(broker_factory, tmp_path)
    url = f"http://127.0.0.1:{broker.port_of('http')}"
    cid = unique("kicked")
    client = Paho5(broker.port, client_id=cid)
    client.connect()
    refused = greenfly("kick", cid, url)  # a URL alone carries no token
    assert refused.returncode == 1
    assert "needs the http listener's bearer token" in refused.stderr
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-token\n")
    denied = greenfly("kick", cid, url, "--token-file", str(wrong))
    assert denied.returncode == 1 and "401" in denied.stderr and "was refused" in denied.stderr
    assert cid in greenfly("clients", url).stdout  # still connected
    done = greenfly("kick", cid, "-c", str(broker.config_path))  # token_file from the config
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"disconnected {cid}"
    assert client.next_disconnect()[0] == 0x98  # administrative action, seen by the client
    assert cid not in greenfly("clients", url).stdout
    gone = greenfly("kick", cid, "-c", str(broker.config_path))
    assert gone.returncode == 1 and "404" in gone.stderr
    client.close()


def test_clear_errors_without_listener_broker_or_token(broker_factory, tmp_path):
    no_http = tmp_path / "mqtt-only.toml"
    no_http.write_text('[[listener]]\nbind = "127.0.0.1"\nport = 1883\n')
    missing = greenfly("clients", "-c", str(no_http))
    assert missing.returncode == 2
    assert "has no http listener" in missing.stderr and 'protocol = "http"' in missing.stderr
    with closed_port() as port:
        down = tmp_path / "down.toml"
        down.write_text(f'[[listener]]\nbind = "127.0.0.1"\nport = {port}\nprotocol = "http"\n')
        stopped = greenfly("clients", "-c", str(down))
        assert stopped.returncode == 1
        assert "connection refused" in stopped.stderr and "Is greenfly running" in stopped.stderr
    broker = http_broker(broker_factory, tmp_path, with_token=False)
    no_token = greenfly("kick", "someone", "-c", str(broker.config_path))
    assert no_token.returncode == 1 and "sets no token_file" in no_token.stderr


class Terminal:
    """A command in a pseudo-terminal of 40 rows x 120 columns; `screens()` splits what it
    wrote into the frames it drew (each starts with cursor home)."""

    def __init__(self, *args: str) -> None:
        self.master, slave = pty.openpty()
        import fcntl
        import struct
        import termios
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.proc = subprocess.Popen([sys.executable, "-m", "broker", *args], cwd=REPO,
                                     stdin=slave, stdout=slave, stderr=slave,
                                     start_new_session=True)
        os.close(slave)
        self.output = b""

    def read_until(self, predicate, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while not predicate(self.text):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"the screen never matched; it showed:\n{self.text[-3000:]}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    self.output += os.read(self.master, 65536)
                except OSError:  # the command ended and closed the terminal
                    break
        return self.text

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")

    def screens(self) -> list[str]:
        return [re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", part) for part in
                self.text.split(HOME)[1:]]

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        os.close(self.master)


def test_top_shows_clients_and_changing_counters_and_quits_on_q(broker_factory, tmp_path):
    broker = http_broker(broker_factory, tmp_path)
    cid = unique("watched")
    client = PahoClient(broker.port, client_id=cid, keepalive=45)
    client.connect()
    term = Terminal("top", "-c", str(broker.config_path))
    try:
        term.read_until(lambda text: cid in text)
        first = next(screen for screen in term.screens() if cid in screen)
        assert "clients   online 1" in first and "CLIENT ID" in first
        row = next(line for line in first.splitlines() if line.startswith(cid))
        assert "127.0.0.1:" in row and "MQTT 3.1.1" in row and " 45 " in row
        before = int(re.search(r"received (\d+)", first)[1])
        for i in range(5):
            client.publish(f"{cid}/t", b"x%d" % i, qos=1)
        term.read_until(lambda text: re.search(rf"received {before + 5}\b", text) is not None)
        frames = len(term.screens())
        term.read_until(lambda text: len(text.split(HOME)) > frames + 2)  # it keeps refreshing
        os.write(term.master, b"q")
        assert term.proc.wait(10) == 0
        term.read_until(lambda text: text.endswith("\x1b[?1049l"), timeout=5)
    finally:
        term.close()
        client.disconnect()

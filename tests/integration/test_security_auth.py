"""Who may connect: Mosquitto password files both ways, refusal codes, the anonymous default,
slowed-down guessing, and hashing that never stalls the hub."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
from support.broker import free_port, wait_for_port
from support.clients import PahoClient, RawClient, unique

from broker.codec import ConnAck, Connect

GREENFLY = [sys.executable, "-m", "broker"]


def _passwd(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*GREENFLY, "passwd", *args], capture_output=True, text=True,
                          input=stdin, timeout=60)


@pytest.fixture
def password_file(tmp_path):
    # Few iterations keep the tests quick; the default count has a test of its own.
    path = tmp_path / "passwords"
    assert _passwd("-I", "1000", "-c", "-b", str(path), "alice", "wonderland").returncode == 0
    assert _passwd("-I", "1000", "-b", str(path), "bob", "builder").returncode == 0
    return path


def _secured(broker_factory, password_file, extra=""):
    return broker_factory(f'[broker]\npassword_file = "{password_file}"\n'
                          f"allow_anonymous = false\n{extra}")


def test_right_wrong_and_missing_credentials(broker_factory, password_file):
    proc = _secured(broker_factory, password_file)
    raw = RawClient(proc.port)
    assert raw.connect(unique(), username="alice", password=b"wonderland") == ConnAck(0, False)
    wrong = RawClient(proc.port)
    assert wrong.connect(unique(), username="alice", password=b"nope").reason_code == 0x86
    assert wrong.closed_by_broker()
    unknown = RawClient(proc.port)
    assert unknown.connect(unique(), username="mallory", password=b"x").reason_code == 0x86
    no_password = RawClient(proc.port)
    assert no_password.connect(unique(), username="bob").reason_code == 0x86
    anonymous = RawClient(proc.port)
    assert anonymous.connect(unique()).reason_code == 0x87
    # On the wire these are the 3.1.1 return codes 0x04 and 0x05:
    wire = RawClient(proc.port)
    wire.send(bytes.fromhex("1018" "00044d515454" "04" "c2" "003c" "00026964" "0003657665"
                           "0003626164"))  # user "eve", password "bad"
    assert wire.recv_bytes(4) == bytes.fromhex("20020004")
    log = proc.log_text()
    assert "user=alice wrong password" in log and "nope" not in log  # never the password


def test_greenfly_accepts_a_file_made_by_mosquitto_passwd(broker_factory, tmp_path):
    path = tmp_path / "mosquitto-made"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(path), "carol", "c4r0l"], check=True,
                   timeout=30)
    subprocess.run(["mosquitto_passwd", "-H", "sha512", "-b", str(path), "dave", "d4ve"],
                   check=True, timeout=30)
    assert path.read_text().count("$7$101$") == 1 and "$6$" in path.read_text()
    proc = _secured(broker_factory, path)
    for user, password in (("carol", "c4r0l"), ("dave", "d4ve")):
        client = PahoClient(proc.port, username=None)
        client.client.username_pw_set(user, password)
        assert client.connect() == (False, 0)
        client.disconnect()
    bad = PahoClient(proc.port, username="carol", password="wrong")
    assert bad.connect()[1] == 0x86  # paho reports CONNACK 0x04 as reason code 0x86


def test_mosquitto_accepts_a_file_made_by_greenfly_passwd(tmp_path):
    password_file = tmp_path / "greenfly-made"
    assert _passwd("-c", "-b", str(password_file), "alice", "wonderland").returncode == 0
    assert "$7$210000$" in password_file.read_text()  # the default count, read by Mosquitto
    assert os.stat(password_file).st_mode & 0o777 == 0o600  # a new file: owner only
    port = free_port()
    config = tmp_path / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous false\n"
                      f"password_file {password_file}\nuser root\n")
    mosquitto = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c",
                                  str(config)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, 10, mosquitto)
        good = PahoClient(port, username="alice", password="wonderland")
        assert good.connect() == (False, 0)
        good.disconnect()
        bad = PahoClient(port, username="alice", password="wrong")
        assert bad.connect()[1] == 0x87  # Mosquitto answers 0x05 (not authorised) here
    finally:
        mosquitto.send_signal(signal.SIGTERM)
        mosquitto.wait(10)


def test_passwd_prompts_twice_deletes_and_upgrades(tmp_path):
    import pty
    path = tmp_path / "prompted"
    path.write_text("")
    os.chmod(path, 0o640)  # as an admin leaves it for a service user's group
    pid, fd = pty.fork()
    if pid == 0:  # the child: greenfly passwd on a terminal
        os.execvp(sys.executable, [*GREENFLY, "passwd", str(path), "erin"])
    transcript = b""
    for answer in (b"first pw\n", b"first pw\n"):
        while b"assword: " not in transcript.rsplit(b"\n", 1)[-1]:
            transcript += os.read(fd, 1024)
        os.write(fd, answer)
        transcript += os.read(fd, 1024)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, transcript
    assert b"Password: " in transcript and b"Reenter password: " in transcript
    assert path.read_text().startswith("erin:$7$210000$")
    path.write_text(path.read_text() + "frank:plain-text\n")
    assert _passwd("-U", str(path)).returncode == 0
    assert "plain-text" not in path.read_text() and path.read_text().count("$7$") == 2
    assert _passwd("-D", str(path), "erin").returncode == 0
    assert path.read_text().startswith("frank:$7$")
    missing = _passwd("-D", str(path), "erin")
    assert missing.returncode == 1 and "not found" in missing.stderr
    assert os.stat(path).st_mode & 0o777 == 0o640  # edits keep the file's mode


def test_anonymous_default_depends_on_loopback_and_says_why(tmp_path):
    def check(body: str) -> str:
        config = tmp_path / "c.toml"
        config.write_text(body)
        result = subprocess.run([*GREENFLY, "check", "-c", str(config)], capture_output=True,
                                text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        return result.stdout
    loopback = check('[[listener]]\nbind = "127.0.0.1"\nport = 1883\n')
    assert ("anonymous clients allowed from loopback addresses only (not set, and every "
            "listener binds to a loopback") in loopback
    public = check('[[listener]]\nbind = "127.0.0.1"\nport = 1883\n'
                   '[[listener]]\nbind = "0.0.0.0"\nport = 8883\n')
    assert public.count("anonymous clients refused (not set, and 0.0.0.0:8883 is not a " \
                        "loopback address") == 2
    explicit = check('[broker]\nallow_anonymous = true\n[[listener]]\nbind = "0.0.0.0"\n')
    assert "anonymous clients allowed (set in [broker])" in explicit


def test_repeated_failures_from_one_address_are_refused_ever_slower(broker_factory,
                                                                     password_file):
    proc = _secured(broker_factory, password_file)
    durations = []
    for _ in range(4):
        raw = RawClient(proc.port)
        start = time.monotonic()
        assert raw.connect(unique(), username="alice", password=b"guess").reason_code == 0x86
        durations.append(time.monotonic() - start)
    assert durations[1] >= 0.25 and durations[2] >= 0.5 and durations[3] >= 1.0, durations
    proc.wait_for_log(r"failure 4 from 127\.0\.0\.1, refused after 1s")
    # The right password still works (and resets the count).
    ok = RawClient(proc.port)
    assert ok.connect(unique(), username="alice", password=b"wonderland") == ConnAck(0, False)


def test_50_parallel_logins_do_not_stall_a_qos0_stream(broker_factory, password_file):
    # One costly hash (a million iterations, about a second): on the hub it would stall the
    # stream for that long; in the threadpool, shared by the 50 identical logins, it does not.
    assert _passwd("-I", "1000000", "-b", str(password_file), "alice", "wonderland"
                   ).returncode == 0
    proc = _secured(broker_factory, password_file)
    topic = f"{unique('stream')}/t"
    sub = PahoClient(proc.port, username="bob", password="builder")
    sub.connect()
    sub.subscribe(topic, 0)
    pub = PahoClient(proc.port, username="bob", password="builder")
    pub.connect()
    stop = threading.Event()

    def stream():
        i = 0
        while not stop.is_set() and i < 10_000:
            pub.client.publish(topic, b"%d" % i, 0)
            i += 1
            time.sleep(0.01)

    streamer = threading.Thread(target=stream)
    streamer.start()
    arrivals = []
    results = []

    def login(i):
        client = RawClient(proc.port)
        client.send_packet(Connect(f"login-{i}", username="alice", password=b"wonderland"))
        results.append(client.recv_packet(timeout=30) == ConnAck(0, False))

    try:
        sub.expect(5)  # the stream is flowing
        logins = [threading.Thread(target=login, args=(i,)) for i in range(50)]
        start = time.monotonic()
        for thread in logins:
            thread.start()
        while any(t.is_alive() for t in logins) and time.monotonic() - start < 60:
            sub.expect(1, timeout=5)
            arrivals.append(time.monotonic())
        logging_in = time.monotonic() - start  # the hash, however slow this machine is now
        for thread in logins:
            thread.join(30)
    finally:
        stop.set()
        streamer.join(10)
    assert results == [True] * 50
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    # Hashing on the hub would stop the stream for about the whole login time.
    assert len(arrivals) > 20 and max(gaps) < logging_in / 2, \
        f"longest stall {max(gaps):.3f}s of {logging_in:.3f}s logging in"


def test_sighup_with_a_changed_password_file_keeps_clients_and_checks_new_logins(
        broker_factory, password_file):
    proc = _secured(broker_factory, password_file)
    alice = PahoClient(proc.port, username="alice", password="wonderland")
    assert alice.connect() == (False, 0)
    assert _passwd("-I", "1000", "-b", str(password_file), "alice", "looking-glass"
                   ).returncode == 0
    proc.mark_log()
    proc.signal(signal.SIGHUP)
    proc.wait_for_log(r"configuration reloaded")
    old = RawClient(proc.port)
    assert old.connect(unique(), username="alice", password=b"wonderland").reason_code == 0x86
    new = RawClient(proc.port)
    assert new.connect(unique(), username="alice", password=b"looking-glass") == \
        ConnAck(0, False)
    topic = f"{unique('hup')}/t"
    alice.subscribe(topic, 1)  # the client connected before the reload is still there
    alice.publish(topic, b"same socket", qos=1)
    assert alice.expect(1)[0].payload == b"same socket"
    assert alice.disconnects.empty()
    # A broken password file on reload keeps the one in force.
    password_file.write_text("alice:$7$notahash\n")
    proc.mark_log()
    proc.signal(signal.SIGHUP)
    proc.wait_for_log(r"SIGHUP: keeping the running configuration: .*passwords:1: user "
                      r"'alice'")
    again = RawClient(proc.port)
    assert again.connect(unique(), username="alice", password=b"looking-glass") == \
        ConnAck(0, False)
    alice.disconnect()


def test_per_listener_overrides_and_max_connections(broker_factory, password_file):
    # The main listener requires a password; a second, loopback-only "local" listener lets
    # anonymous clients in but takes at most two at a time.
    proc = _secured(broker_factory, password_file,
                    '[[listener]]\nbind = "127.0.0.1"\nport = 0\n'
                    "allow_anonymous = true\nmax_connections = 2\n")
    local = proc.port_of("mqtt", 1)
    assert RawClient(proc.port).connect(unique()).reason_code == 0x87  # main: no anonymous
    first, second = RawClient(local), RawClient(local)
    assert first.connect(unique()) == ConnAck(0, False)
    assert second.connect(unique()) == ConnAck(0, False)
    third = RawClient(local)
    assert third.closed_by_broker(3)  # refused before CONNECT
    proc.wait_for_log(r"refusing 127\.0\.0\.1:\d+ on mqtt on 127\.0\.0\.1:\d+: "
                      r"max_connections \(2\) reached")
    first.close()
    proc.wait_for_log(r"client disconnected: .* reason=socket closed by peer")
    fourth = RawClient(local)
    assert fourth.connect(unique()) == ConnAck(0, False)  # a place was freed

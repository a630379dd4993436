"""What clients may touch: Mosquitto ACL files, per user, with patterns, denies, anonymous
rules and $SYS, checked at PUBLISH, SUBSCRIBE and every delivery."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from support.clients import PahoClient, expect_marker, unique

ACL = """\
# anonymous clients
topic read public/#

user alice
topic readwrite alice/#
topic deny alice/secret
topic write shared/inbox

user bob
topic read shared/#
topic read alice/news

pattern readwrite devices/%c/#
pattern read users/%u/#
"""


@pytest.fixture(scope="module")
def passwords(tmp_path_factory):
    """One password file for the module (no test changes it): three `greenfly passwd` runs
    per test cost more than the tests."""
    path = tmp_path_factory.mktemp("acl-users") / "passwords"
    for user in ("alice", "bob", "admin"):
        subprocess.run([sys.executable, "-m", "broker", "passwd", "-I", "1000", "-b",
                        *(["-c"] if user == "alice" else []), str(path), user, user],
                       check=True, timeout=30)
    return path


@pytest.fixture
def acl_broker(broker_factory, passwords, tmp_path):
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    proc = broker_factory(f'[broker]\npassword_file = "{passwords}"\nacl_file = "{acl}"\n'
                          "allow_anonymous = true\n", sys_interval=1)
    proc.acl_path = acl
    return proc


def _client(proc, user=None, client_id=None):
    client = PahoClient(proc.port, client_id, username=user, password=user)
    assert client.connect()[1] == 0
    return client


def test_subscribe_to_a_filter_without_read_access_gets_0x80(acl_broker):
    alice = _client(acl_broker, "alice")
    assert alice.subscribe("alice/#", 1) == [1]
    assert alice.subscribe("#", 0) == [0x80]  # alice/# does not cover #
    assert alice.subscribe("public/#", 0) == [0x80]  # public is for anonymous clients
    assert alice.subscribe("bob/x", 0) == [0x80]
    bob = _client(acl_broker, "bob")
    assert bob.subscribe("shared/+/x", 1) == [1]  # covered by shared/#
    assert bob.subscribe("alice/news", 0) == [0]
    assert bob.subscribe("alice/+", 0) == [0x80]
    for client in (alice, bob):
        client.disconnect()


def test_publish_without_write_access_is_acknowledged_but_not_forwarded(acl_broker):
    alice = _client(acl_broker, "alice")
    bob = _client(acl_broker, "bob")
    bob.subscribe("shared/#", 1)
    bob.subscribe("alice/news", 1)
    bob.publish("shared/inbox", b"bob may not write here", qos=1)  # PUBACK still arrives
    alice.publish("alice/news", b"from alice", qos=1)
    alice.publish("shared/inbox", b"alice may", qos=1)
    got = [m.payload for m in bob.expect(2)]  # bob's own message, forwarded, would be first
    assert sorted(got) == [b"alice may", b"from alice"]
    for client in (alice, bob):
        client.disconnect()


def test_deny_wins_and_is_checked_per_delivery(acl_broker):
    alice = _client(acl_broker, "alice")
    assert alice.subscribe("alice/#", 1) == [1]
    other = _client(acl_broker, "alice", client_id=unique("alice-2"))
    other.publish("alice/secret", b"nobody sees this", qos=1)  # write denied
    other.publish("alice/open", b"fine", qos=1)
    assert [m.payload for m in alice.expect(1)] == [b"fine"]  # not "nobody sees this" first
    for client in (alice, other):
        client.disconnect()


def test_patterns_substitute_client_id_and_user_name(acl_broker):
    device = _client(acl_broker, "bob", client_id="sensor-9")
    assert device.subscribe("devices/sensor-9/#", 1) == [1]
    assert device.subscribe("devices/sensor-8/#", 0) == [0x80]
    assert device.subscribe("users/bob/#", 0) == [0]
    assert device.subscribe("users/alice/#", 0) == [0x80]
    device.publish("devices/sensor-9/temp", b"21.5", qos=1)
    assert device.expect(1)[0].payload == b"21.5"
    device.disconnect()
    # A client id with a '/' must not reach another device's subtree through %c.
    sneaky = _client(acl_broker, "bob", client_id="sensor-9/x")
    assert sneaky.subscribe("devices/sensor-9/x/#", 0) == [0x80]
    sneaky.disconnect()


def test_anonymous_rules_apply_before_any_user_line(acl_broker):
    anonymous = _client(acl_broker)
    assert anonymous.subscribe("public/#", 0) == [0]
    assert anonymous.subscribe("alice/#", 0) == [0x80]
    anonymous.publish("public/x", b"anonymous may not write", qos=1)
    # Nobody may write public/: the marker is $SYS, readable by all, which comes after the
    # PUBACK, so after public/x had it been forwarded.
    assert anonymous.subscribe("$SYS/broker/uptime", 0) == [0]
    assert anonymous.expect(1)[0].topic == "$SYS/broker/uptime"
    anonymous.disconnect()


def test_sys_is_readable_by_everyone_and_writable_by_nobody(acl_broker):
    watcher = _client(acl_broker, "bob")
    assert watcher.subscribe("$SYS/broker/uptime", 0) == [0]
    assert watcher.expect(1)[0].payload.endswith(b"seconds")
    assert watcher.subscribe("$SYS/fake/#", 0) == [0]
    assert watcher.subscribe("shared/inbox", 0) == [0]
    admin = _client(acl_broker, "alice")
    admin.publish("$SYS/fake/x", b"forged", qos=1)
    expect_marker(watcher, admin, "shared/inbox")  # alice may write there, bob read
    admin.disconnect()
    watcher.disconnect()


def test_sighup_with_a_new_acl_keeps_clients_and_applies_to_new_subscriptions(acl_broker):
    bob = _client(acl_broker, "bob")
    assert bob.subscribe("news/#", 0) == [0x80]
    acl_broker.acl_path.write_text(ACL + "user bob\ntopic read news/#\n")
    acl_broker.mark_log()
    acl_broker.signal(signal.SIGHUP)
    acl_broker.wait_for_log(r"configuration reloaded")
    assert bob.subscribe("news/#", 0) == [0]  # same socket, new rules
    assert bob.disconnects.empty()
    # A broken ACL on reload leaves the rules in force.
    acl_broker.acl_path.write_text("topik read x\n")
    acl_broker.mark_log()
    acl_broker.signal(signal.SIGHUP)
    acl_broker.wait_for_log(r"SIGHUP: keeping the running configuration: .*acl:1: "
                            r"unknown keyword 'topik'")
    assert bob.subscribe("news/again/#", 0) == [0]
    bob.disconnect()


@pytest.mark.parametrize("line", ["topic readwrit a/#", "pattern wrte devices/%c/#",
                                  "topic my topic/#"])
def test_an_unknown_access_word_is_a_load_error_naming_file_and_line(tmp_path, line):
    # `topic readwrit a/#` once granted readwrite on the topic "readwrit a/#", silently.
    # As Mosquitto: when a filter follows, the word before it must be an access word (a
    # filter with spaces needs one: `topic readwrite my topic/#`).
    acl = tmp_path / "typo.acl"
    acl.write_text(f"user alice\ntopic read ok/#\n{line}\n")
    config = tmp_path / "greenfly.toml"
    config.write_text(f'[broker]\ndata_dir = "{tmp_path / "data"}"\nacl_file = "{acl}"\n'
                      '[[listener]]\nbind = "127.0.0.1"\nport = 0\n')
    word = line.split()[1]
    expected = f"typo.acl:3: unknown access {word!r}; expected read, write, readwrite or deny"
    for args in (["check", "-c", str(config)], ["-c", str(config)]):  # check, then start-up
        result = subprocess.run([sys.executable, "-m", "broker", *args], capture_output=True,
                                text=True, timeout=30)
        assert result.returncode == 2, result
        assert expected in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_a_filter_with_spaces_after_an_access_word_still_loads(broker_factory, tmp_path):
    acl = tmp_path / "spaces.acl"
    acl.write_text("topic readwrite my topic/#\n")
    proc = broker_factory(f'[broker]\nacl_file = "{acl}"\nallow_anonymous = true\n')
    client = PahoClient(proc.port)
    assert client.connect()[1] == 0
    assert client.subscribe("my topic/x", 0) == [0]
    assert client.subscribe("other/x", 0) == [0x80]
    client.disconnect()

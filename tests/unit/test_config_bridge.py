"""[[bridge]] sections: Mosquitto's topic-line grammar, and errors that name the line."""

from __future__ import annotations

import pytest

from broker.config.loading import load_text
from broker.errors import ConfigError

BASE = '[[bridge]]\nname = "cloud"\naddress = ["broker.example.org:8883"]\n'


def test_the_issue_example_loads_with_mosquitto_defaults():
    config = load_text(BASE + 'topic = [\n  "sensors/# out 1 house/ site-a/",\n  "cmd/# in 1",\n'
                       '  "# both",\n  "x in 2 \\"\\" far/",\n]\n', "g.toml")
    [bridge] = config.bridges
    out, inward, both, bare = bridge.topic
    assert (out.local_filter, out.remote_filter, out.qos) == ("house/sensors/#",
                                                              "site-a/sensors/#", 1)
    assert out.to_remote("house/sensors/t") == "site-a/sensors/t"
    assert out.to_remote("sensors/t") is None and inward.to_remote("cmd/x") is None
    assert inward.to_local("cmd/x") == "cmd/x"
    assert (both.direction, both.qos) == ("both", 0)
    assert bare.to_local("far/x") == "x"
    assert bridge.restart_timeout == (5.0, 30.0) and bridge.protocol_version == "mqttv311"


@pytest.mark.parametrize("line, words", [
    ("sensors/# sideways 1", "direction 'sideways'"),
    ("sensors/# out 3", "QoS '3'"),
    ("sensors/# out 1 house/", "1, 2, 3 or 5 words"),
    ("sensors/#/x out 1", "not valid"),
    ("s out 1 ho#/ x/", "wildcard"),
])
def test_a_malformed_topic_line_names_its_own_line(line, words):
    text = BASE + f'topic = [\n  "a/# out 0",\n  "{line}",\n]\n'
    with pytest.raises(ConfigError) as caught:
        load_text(text, "g.toml")
    assert caught.value.line == 6 and caught.value.key == "bridge[0].topic"
    assert words in str(caught.value)


@pytest.mark.parametrize("extra, key", [
    ('topc = ["a"]\n', "bridge[0].topc"),
    ('topic = ["a"]\ncertfile = "c.pem"\nkeyfile = "k.pem"\n', "bridge[0].certfile"),
    ('topic = ["a"]\nrestart_timeout = [60, 5]\n', "bridge[0].restart_timeout"),
])
def test_unknown_and_misfitting_keys_are_errors(extra, key):
    with pytest.raises(ConfigError) as caught:
        load_text(BASE + extra, "g.toml")
    assert caught.value.key == key


def test_two_bridges_may_not_share_a_name():
    with pytest.raises(ConfigError, match="bridge\\[0\\] too"):
        load_text(BASE + 'topic = ["a"]\n' + BASE + 'topic = ["b"]\n', "g.toml")

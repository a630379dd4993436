"""The `protocol = "http"` listener's keys: where they are allowed, and what they leave alone."""

from __future__ import annotations

import pytest

from broker.config.loading import load_default, load_text
from broker.config.schema import ANONYMOUS_LOOPBACK, anonymous_policy
from broker.errors import ConfigError


def test_default_config_has_the_http_listener_on_loopback_8080():
    http = [x for x in load_default().listeners if x.protocol == "http"]
    assert [(x.bind, x.port, x.token_file) for x in http] == [("127.0.0.1", 8080, None)]


def test_token_file_is_read_on_an_http_listener():
    config = load_text('[[listener]]\nport = 0\nprotocol = "http"\ntoken_file = "/t"\n', "x.toml")
    assert config.listeners[0].token_file == "/t"


@pytest.mark.parametrize(("body", "key", "says"), [
    ('protocol = "mqtt"\ntoken_file = "/t"', "token_file", "only an http listener has this key"),
    ('protocol = "websockets"\ntoken_file = "/t"', "token_file", "only an http listener"),
    ('protocol = "http"\npassword_file = "/p"', "password_file", "an MQTT key"),
    ('protocol = "http"\npath = "/x"', "path", "only a websockets listener has this key"),
])
def test_keys_of_another_kind_of_listener_are_refused(body, key, says):
    with pytest.raises(ConfigError) as caught:
        load_text(f"[[listener]]\nport = 0\n{body}\n", "x.toml")
    assert f"listener[0].{key}" in str(caught.value) and says in str(caught.value)


def test_a_public_http_listener_does_not_turn_anonymous_mqtt_off():
    # Its requests need the token there; MQTT on loopback stays as it was.
    config = load_text('[[listener]]\nport = 1883\n[[listener]]\nbind = "0.0.0.0"\nport = 8080\n'
                       'protocol = "http"\n', "x.toml")
    assert anonymous_policy(config, config.listeners[0])[0] == ANONYMOUS_LOOPBACK

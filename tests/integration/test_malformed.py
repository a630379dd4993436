"""Malformed input: every MUST the spec puts on a client. Each case closes that one
connection, logs why with the client id and address, and a fresh client is still served."""

from __future__ import annotations

import re

import pytest
from support.clients import PahoClient, RawClient, unique

from broker.codec import ConnAck

# (name, bytes sent after a successful CONNECT, what the log must say)
AFTER_CONNECT = [
    ("publish-qos-3 [MQTT-3.3.1-4]", "3606000161000168", r"QoS 3"),
    ("publish-dup-on-qos-0 [MQTT-3.3.1-2]", "380400016168", r"DUP"),
    ("publish-wildcard-plus [MQTT-3.3.2-2]", "30060003612b6268", r"wildcard"),
    ("publish-wildcard-hash [MQTT-3.3.2-2]", "300400026123", r"wildcard"),
    ("publish-empty-topic [MQTT-4.7.3-1]", "3003000068", r"empty topic"),
    ("publish-ill-formed-utf8 [MQTT-1.5.3-1]", "30050002c08068", r"ill-formed UTF-8"),
    ("publish-encoded-surrogate [MQTT-1.5.3-1]", "30060003eda08068", r"ill-formed UTF-8"),
    ("publish-null-character [MQTT-1.5.3-2]", "30050002610068", r"U\+0000"),
    ("publish-packet-id-0 [MQTT-2.3.1-1]", "32050001610000", r"packet identifier 0"),
    ("publish-control-character (1.5.3, refused as Mosquitto does)", "30050002610168",
     r"U\+0001, a control character"),
    ("publish-non-character U+FFFF (1.5.3)", "30060003efbfbf68",
     r"U\+FFFF"),
    ("pubrel-reserved-flags [MQTT-3.6.1-1]", "60020001", r"reserved fixed-header flags"),
    ("subscribe-reserved-flags [MQTT-3.8.1-1]", "8006000100016100",
     r"reserved fixed-header flags"),
    ("subscribe-no-filters [MQTT-3.8.3-3]", "82020001", r"no topic filter"),
    ("subscribe-qos-3 [MQTT-3.8.3-4]", "8206000100016103", r"QoS 3"),
    ("subscribe-reserved-option-bits [MQTT-3.8.3-4]", "8206000100016104", r"reserved bits"),
    ("subscribe-filter-hash-not-last [MQTT-4.7.1-2]", "820a00010005612f232f6200",
     r"invalid topic filter"),
    ("subscribe-filter-plus-in-level [MQTT-4.7.1-3]", "820700010002612b00",
     r"invalid topic filter"),
    ("subscribe-packet-id-0 [MQTT-2.3.1-1]", "8206000000016100", r"packet identifier 0"),
    ("unsubscribe-no-filters [MQTT-3.10.3-2]", "a2020001", r"no topic filter"),
    ("unsubscribe-reserved-flags [MQTT-3.10.1-1]", "a0050001000161",
     r"reserved fixed-header flags"),
    ("second-connect [MQTT-3.1.0-2]", "100c00044d5154540402003c0000", r"second CONNECT"),
    ("server-only-connack", "20020000", r"CONNACK may not be sent"),
    ("server-only-suback", "9003000100", r"SUBACK may not be sent"),
    ("server-only-unsuback", "b0020001", r"UNSUBACK may not be sent"),
    ("server-only-pingresp", "d000", r"PINGRESP may not be sent"),
    ("reserved-packet-type-0 (3.1.1 section 2.2.1)", "0000", r"reserved packet type"),
    ("auth-before-mqtt-5", "f000", r"AUTH"),
    ("five-byte-remaining-length [MQTT-1.5.5-1]", "30ffffffff7f", r"longer than four bytes"),
    ("pingreq-with-a-body", "c00100", r"unexpected bytes"),
    ("disconnect-with-a-body", "e00100", r"unexpected bytes"),
    ("puback-too-long", "4003000100", r"unexpected bytes"),
    ("truncated-topic-length", "3003000561", r"truncated"),
    ("suback-truncated-filter", "8205000100ff61", r"truncated"),
]

# (name, bytes sent instead of a CONNECT, what the log must say)
BEFORE_CONNECT = [
    ("first-packet-not-connect [MQTT-3.1.0-1]", "c000",
     r"first packet is not CONNECT: first byte 0xC0"),
    ("connect-reserved-flag [MQTT-3.1.2-3]", "100c00044d5154540403003c0000",
     r"reserved connect flag"),
    ("connect-will-qos-without-will [MQTT-3.1.2-11]", "100c00044d5154540412003c0000",
     r"will QoS/retain set without a will"),
    ("connect-will-qos-3 [MQTT-3.1.2-14]", "101200044d515454041e003c0000000161000161",
     r"will QoS 3"),
    ("connect-password-without-username [MQTT-3.1.2-22]", "100f00044d5154540442003c0000000170",
     r"password flag without user name"),
    ("connect-unknown-protocol-name [MQTT-3.1.2-1]", "100c00044d5154580402003c0000",
     r"unknown protocol name"),
    ("connect-client-id-runs-past-the-end", "100c00044d5154540402003c0009", r"truncated"),
    ("connect-extra-bytes", "100d00044d5154540402003c000000", r"unexpected bytes"),
    ("connect-will-topic-wildcard", "101300044d5154540406003c000000012300026869",
     r"invalid will topic"),
    ("connect-client-id-null-char [MQTT-1.5.3-2]", "100d00044d5154540402003c000100", r"U\+0000"),
]


def _still_served(broker) -> None:
    client = PahoClient(broker.port)
    assert client.connect() == (False, 0)
    topic = f"{unique('alive')}/t"
    client.subscribe(topic, 1)
    client.publish(topic, b"still here", qos=1)
    assert client.expect(1)[0].payload == b"still here"
    client.disconnect()


@pytest.fixture(scope="module")
def bystander(broker):
    """A client connected through all the cases: nobody else is affected."""
    client = PahoClient(broker.port)
    client.connect()
    topic = f"{unique('bystander')}/t"
    client.subscribe(topic, 1)
    yield client, topic
    client.publish(topic, b"unaffected", qos=1)
    assert client.expect(1)[0].payload == b"unaffected"
    assert client.disconnects.empty()
    client.disconnect()


@pytest.mark.parametrize(("name", "data", "logged"), AFTER_CONNECT,
                         ids=[c[0] for c in AFTER_CONNECT])
def test_malformed_packet_after_connect_closes_only_that_connection(broker, bystander, name, data,
                                                                    logged):
    broker.mark_log()
    raw = RawClient(broker.port)
    client_id = unique("bad")
    assert raw.connect(client_id) == ConnAck(0, False)
    raw.send(bytes.fromhex(data))
    assert raw.closed_by_broker(), f"{name}: connection left open"
    match = broker.wait_for_log(rf"closing {client_id} from 127\.0\.0\.1:\d+: .*")
    assert re.search(logged, match.group(0)), match.group(0)
    _still_served(broker)


@pytest.mark.parametrize(("name", "data", "logged"), BEFORE_CONNECT,
                         ids=[c[0] for c in BEFORE_CONNECT])
def test_malformed_connect_closes_without_connack(broker, bystander, name, data, logged):
    broker.mark_log()
    raw = RawClient(broker.port)
    raw.send(bytes.fromhex(data))
    assert raw.closed_by_broker(), f"{name}: connection left open"
    assert raw.decoder.buffered() == 0, f"{name}: the broker answered before closing"
    match = broker.wait_for_log(r"closing .* from 127\.0\.0\.1:\d+: .*")
    assert re.search(logged, match.group(0)), match.group(0)
    _still_served(broker)

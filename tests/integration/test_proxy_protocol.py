"""PROXY protocol v1/v2 on an `mqtt` listener with `proxy_protocol = true`, byte by byte.

A raw socket plays the proxy (from 127.0.0.1, a trusted proxy) and writes the header itself;
the broker must log, and judge, the client the header names. A peer that is not a trusted
proxy (the socket binds 127.0.0.2), a missing header, a broken one or none at all closes the
socket with the reason in the log. The same through real nginx: test_proxy_client_address.py.
"""

from __future__ import annotations

import contextlib
import re
import time

import pytest
from support.clients import RawClient, unique

from broker.codec import MQTT_5, ConnAck, Connect
from broker.net.proxy_header import encode_v1, encode_v2

PROXIED = ('[broker]\nconnect_timeout = 1\n{broker}'
           '[[listener]]\nbind = "127.0.0.1"\nport = 0\nproxy_protocol = true\n')


@pytest.fixture
def proxied(broker_factory):
    """Anonymous clients allowed from anywhere: these tests are about the address."""
    return broker_factory(PROXIED.format(broker="allow_anonymous = true\n"))


@pytest.fixture
def by_default(broker_factory):
    """allow_anonymous not set, every listener on loopback."""
    return broker_factory(PROXIED.format(broker=""))


def proxied_port(proc) -> int:
    return proc.port_of("mqtt", 1)  # the generated plain listener is #0


@pytest.mark.parametrize(("header", "logged"), [
    (encode_v1(("203.0.113.9", 51234), ("192.0.2.1", 8883)), "203.0.113.9:51234"),
    (encode_v1(("2001:db8::7", 51234), ("2001:db8::1", 8883)), "[2001:db8::7]:51234"),
    (encode_v2(("203.0.113.9", 51234), ("192.0.2.1", 8883)), "203.0.113.9:51234"),
    (encode_v2(("2001:db8::7", 51234), ("2001:db8::1", 8883)), "[2001:db8::7]:51234"),
    # frpc's v2 header naming nginx (127.0.0.1, trusted), then nginx's naming the device.
    (encode_v2(("127.0.0.1", 40000), ("127.0.0.1", 1883))
     + encode_v1(("203.0.113.9", 51234), ("192.0.2.1", 8883)), "203.0.113.9:51234"),
])
def test_the_client_named_by_the_header_is_the_logged_address(proxied, header, logged):
    client_id = unique("proxied")
    raw = RawClient(proxied_port(proxied))
    raw.send(header)
    assert raw.connect(client_id) == ConnAck(0, False)
    proxied.wait_for_log(rf"client connected: {client_id} from {re.escape(logged)} ")


@pytest.mark.parametrize("header", [encode_v2(None), b"PROXY UNKNOWN\r\n"])
def test_local_and_unknown_leave_the_proxy_s_own_address(proxied, header):
    client_id = unique("local")
    raw = RawClient(proxied_port(proxied))
    raw.send(header)
    assert raw.connect(client_id) == ConnAck(0, False)
    proxied.wait_for_log(rf"client connected: {client_id} from 127\.0\.0\.1:\d+ ")


def test_a_header_split_across_writes_and_the_connect_in_the_same_write(proxied):
    client_id = unique("split")
    header = encode_v1(("203.0.113.9", 51234), ("192.0.2.1", 8883))
    raw = RawClient(proxied_port(proxied))
    raw.send(header[:9])
    time.sleep(0.05)  # two TCP segments, so the broker reads a partial header
    raw.send(header[9:])
    assert raw.connect(client_id) == ConnAck(0, False)
    proxied.wait_for_log(rf"client connected: {client_id} from 203\.0\.113\.9:51234 ")


@pytest.mark.parametrize(("sent", "why"), [
    (None, r"no PROXY protocol header: the stream starts with b'\\x10"),  # a plain CONNECT
    (b"PROXY TCP4 203.0.113.9 192.0.2.1 99999 8883\r\n", r"port b'99999' is not 0\.\.65535"),
    (b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x04abcd", r"4 bytes cannot hold two IPv4"),
])
def test_a_missing_or_broken_header_from_a_trusted_proxy_closes_with_the_reason(
        proxied, sent, why):
    raw = RawClient(proxied_port(proxied))
    started = time.monotonic()
    if sent is None:
        raw.send_packet(Connect(unique("direct")))
    else:
        raw.send(sent)
    assert raw.closed_by_broker(timeout=5)
    assert time.monotonic() - started < 0.9  # at once, not after connect_timeout
    proxied.wait_for_log(rf"WARNING greenfly\.listener: closing 127\.0\.0\.1:\d+: .*{why}.*; "
                         r"mqtt on .* needs every connection to start with a PROXY protocol "
                         r"header")


def test_a_proxy_that_sends_nothing_is_closed_after_the_deadline(proxied):
    raw = RawClient(proxied_port(proxied))
    started = time.monotonic()
    assert raw.closed_by_broker(timeout=5)
    assert 0.9 < time.monotonic() - started < 4  # connect_timeout 1 s bounds the header
    proxied.wait_for_log(r"closing 127\.0\.0\.1:\d+: no PROXY protocol header within 1s")


def test_a_peer_that_is_not_a_trusted_proxy_is_refused(proxied):
    raw = RawClient(proxied_port(proxied), source="127.0.0.2")
    # The broker closes such a peer on accept: a send may already find the socket gone.
    with contextlib.suppress(OSError):
        raw.send(encode_v1(("203.0.113.9", 51234), ("192.0.2.1", 8883)))
        raw.send_packet(Connect(unique("spoofer")))
    assert raw.closed_by_broker(timeout=5)
    proxied.wait_for_log(r"closing 127\.0\.0\.2:\d+: mqtt on 127\.0\.0\.1:\d+ \(PROXY protocol\) "
                         r"takes PROXY protocol connections from trusted_proxies only")
    assert "203.0.113.9" not in proxied.log_text()


def test_the_plain_listener_beside_it_is_unchanged(proxied):
    raw = RawClient(proxied.port)
    assert raw.connect(unique()) == ConnAck(0, False)


# -- anonymous clients: the real address decides -----------------------------------------------

REMOTE = encode_v1(("203.0.113.9", 51234), ("192.0.2.1", 8883))


def test_an_anonymous_client_the_proxy_names_as_remote_is_refused_with_5(by_default):
    client_id = unique("anon")
    raw = RawClient(proxied_port(by_default))
    raw.send(REMOTE)
    raw.send_packet(Connect(client_id))
    assert raw.recv_bytes(4) == bytes.fromhex("20020005")  # 3.1.1: not authorised
    by_default.wait_for_log(rf"connection refused: {client_id} from 203\.0\.113\.9:51234: "
                            r"anonymous clients are allowed from loopback addresses only, and "
                            r"203\.0\.113\.9 is remote \(allow_anonymous not set\)")


def test_an_mqtt5_anonymous_remote_client_gets_0x87(by_default):
    raw = RawClient(proxied_port(by_default), protocol_level=MQTT_5)
    raw.send(encode_v2(("2001:db8::7", 51234), ("2001:db8::1", 8883)))
    raw.send_packet(Connect(unique("anon5"), protocol_level=MQTT_5), MQTT_5)
    assert raw.recv_packet().reason_code == 0x87


@pytest.mark.parametrize("header", [encode_v1(("127.0.0.1", 40000), ("127.0.0.1", 1883)),
                                    encode_v2(None)])
def test_an_anonymous_client_on_this_machine_is_still_welcome(by_default, header):
    raw = RawClient(proxied_port(by_default))
    raw.send(header)
    assert raw.connect(unique("local")) == ConnAck(0, False)


def test_the_start_up_log_says_anonymous_clients_are_for_loopback_only(by_default):
    by_default.wait_for_log(r"listening: mqtt on 127\.0\.0\.1:\d+ \(PROXY protocol\); "
                            r"anonymous clients allowed from loopback addresses only \(not set")

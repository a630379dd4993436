"""Bytes that are not MQTT on the MQTT port [MQTT-3.1.0-1]: an HTTP client, a TLS client, a
proxy speaking the PROXY protocol, and any first byte that does not start a CONNECT. Each is
closed on its first bytes, not held until connect_timeout (10 s here), and the log says what
it looked like; clients that do speak MQTT are served as before."""

from __future__ import annotations

import http.client
import socket
import ssl
import time

import pytest
from support.clients import PahoClient, RawClient

# Well under the broker's connect_timeout (10 s, the default), with room for a loaded machine.
QUICKLY = 2.0


def _closing_line(broker) -> str:
    return broker.wait_for_log(r"closing \(no client id yet\) from 127\.0\.0\.1:\d+: .*").group(0)


def test_http_request_is_closed_at_once_and_logged_as_http(broker):
    broker.mark_log()
    conn = http.client.HTTPConnection("127.0.0.1", broker.port, timeout=QUICKLY * 2)
    start = time.monotonic()
    conn.request("GET", "/")
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        conn.getresponse()
    assert time.monotonic() - start < QUICKLY
    conn.close()
    line = _closing_line(broker)
    assert "first packet is not CONNECT: this looks like HTTP (use the websockets listener)" \
        in line, line
    assert "b'GET / HTTP/1.1\\r\\n" in line, line  # the bytes, escaped: no forged log lines


def test_tls_client_on_the_plain_port_is_closed_at_once_and_logged_as_tls(broker):
    broker.mark_log()
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", broker.port), timeout=QUICKLY * 2) as sock, \
            pytest.raises((ssl.SSLError, ConnectionResetError)):
        context.wrap_socket(sock, server_hostname="localhost")
    assert time.monotonic() - start < QUICKLY
    line = _closing_line(broker)
    assert "this looks like TLS (use the mqtts listener / port)" in line, line


@pytest.mark.parametrize(("data", "logged"), [
    # A PUBLISH header declaring 127 bytes: the decoder alone would wait for them.
    (b"\x30\x7f", "first packet is not CONNECT: first byte 0x30"),
    (b"G", "this looks like HTTP"),  # one byte of an HTTP request is enough
    (b"PROXY TCP4 198.51.100.7 127.0.0.1 50000 1883\r\n", "this looks like a PROXY protocol"),
    (b"\x12\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00", "first byte 0x12"),  # CONNECT with flags
], ids=["publish-header", "one-letter", "proxy-v1", "connect-with-flags"])
def test_first_byte_that_is_not_connect_closes_at_once(broker, data, logged):
    broker.mark_log()
    raw = RawClient(broker.port)
    start = time.monotonic()
    raw.send(data)
    assert raw.closed_by_broker(QUICKLY), "held open"
    assert time.monotonic() - start < QUICKLY
    assert raw.decoder.buffered() == 0, "the broker answered before closing"
    line = _closing_line(broker)
    assert logged in line, line
    client = PahoClient(broker.port)  # MQTT clients are still served
    assert client.connect() == (False, 0)
    client.disconnect()


def test_connect_sent_one_byte_at_a_time_is_still_served(broker):
    """Only the first byte decides: a CONNECT that trickles in is an MQTT client."""
    raw = RawClient(broker.port)
    for byte in bytes.fromhex("100c00044d5154540402003c0000"):
        raw.send(bytes((byte,)))
        time.sleep(0.01)  # separate reads, not one
    assert raw.recv_packet().reason_code == 0
    raw.close()

"""The PROXY protocol header parser (v1 text, v2 binary): whole, byte by byte, and broken."""

from __future__ import annotations

import struct

import pytest

from broker.net.proxy_header import (
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderError,
    encode_v1,
    encode_v2,
    parse,
)

CONNECT = bytes.fromhex("100c00044d5154540402003c0000")  # what follows a header

V1_TCP4 = b"PROXY TCP4 203.0.113.9 192.0.2.1 51234 8883\r\n"
V1_TCP6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 51234 8883\r\n"
V2_TCP4 = (V2_SIGNATURE + b"\x21\x11\x00\x0c" + bytes([203, 0, 113, 9, 192, 0, 2, 1])
           + struct.pack("!HH", 51234, 8883))
V2_TCP6 = (V2_SIGNATURE + b"\x21\x21\x00\x24" + bytes.fromhex("20010db8" + "0" * 23 + "7")
           + bytes.fromhex("20010db8" + "0" * 23 + "1") + struct.pack("!HH", 51234, 8883))

WHOLE = [
    (V1_TCP4, ProxyHeader(1, len(V1_TCP4), ("203.0.113.9", 51234), ("192.0.2.1", 8883))),
    (V1_TCP6, ProxyHeader(1, len(V1_TCP6), ("2001:db8::7", 51234), ("2001:db8::1", 8883))),
    (b"PROXY UNKNOWN\r\n", ProxyHeader(1, 15, None, None, "UNKNOWN")),
    # The rest of an UNKNOWN line is ignored, whatever it says.
    (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", ProxyHeader(1, 35, None, None, "UNKNOWN")),
    (V2_TCP4, ProxyHeader(2, 28, ("203.0.113.9", 51234), ("192.0.2.1", 8883))),
    (V2_TCP6, ProxyHeader(2, 52, ("2001:db8::7", 51234), ("2001:db8::1", 8883))),
    # LOCAL: the proxy speaking for itself (a health check); addresses, if any, ignored.
    (V2_SIGNATURE + b"\x20\x00\x00\x00", ProxyHeader(2, 16, None, None, "LOCAL")),
    (V2_SIGNATURE + b"\x20\x11\x00\x0c" + bytes(12), ProxyHeader(2, 28, None, None, "LOCAL")),
    (V2_SIGNATURE + b"\x21\x00\x00\x00", ProxyHeader(2, 16, None, None, "UNSPEC")),
    (V2_SIGNATURE + b"\x21\x31\x00\xd8" + bytes(216), ProxyHeader(2, 232, None, None, "UNIX")),
    # TLVs after the addresses (frp and HAProxy send some) are skipped.
    (V2_TCP4[:14] + b"\x00\x13" + V2_TCP4[16:] + b"\x04\x00\x04abcd"[:7],
     ProxyHeader(2, 35, ("203.0.113.9", 51234), ("192.0.2.1", 8883))),
]


@pytest.mark.parametrize(("wire", "header"), WHOLE)
def test_a_whole_header_followed_by_mqtt(wire, header):
    assert parse(wire + CONNECT) == header
    assert parse(wire) == header


@pytest.mark.parametrize(("wire", "header"), WHOLE)
def test_every_prefix_of_a_header_asks_for_more(wire, header):
    for n in range(len(wire)):
        assert parse(wire[:n]) is None, n


@pytest.mark.parametrize(("wire", "message"), [
    (CONNECT, "no PROXY protocol header"),  # a client straight to the listener, no proxy
    (b"GET / HTTP/1.1\r\n", "no PROXY protocol header"),
    (b"PROXY TCP4 203.0.113.9 192.0.2.1 51234\r\n", "expected SRC DST SPORT DPORT"),
    (b"PROXY TCP4 203.0.113.9  192.0.2.1 51234 8883\r\n", "expected SRC DST SPORT DPORT"),
    (b"PROXY TCP4 2001:db8::7 192.0.2.1 51234 8883\r\n", "not TCP4"),
    (b"PROXY TCP6 203.0.113.9 192.0.2.1 51234 8883\r\n", "not TCP6"),
    (b"PROXY TCP4 203.0.113.9 192.0.2.1 65536 8883\r\n", "port b'65536'"),
    (b"PROXY TCP4 203.0.113.9 192.0.2.1 051234 8883\r\n", "port b'051234'"),
    (b"PROXY TCP4 203.0.113.9 192.0.2.1 -1 8883\r\n", "port b'-1'"),
    (b"PROXY UDP4 203.0.113.9 192.0.2.1 1 2\r\n", "not TCP4, TCP6 or UNKNOWN"),
    (b"PROXY TCP4 203.0.113.9 192.0.2.1 1 2\n", "without CRLF"),
    (b"PROXY UNKNOWN " + b"x" * 100, "without CRLF"),
    (V2_SIGNATURE + b"\x11\x11\x00\x00", "version 1"),
    (V2_SIGNATURE + b"\x22\x11\x00\x00", "command 2"),
    (V2_SIGNATURE + b"\x21\x41\x00\x00", "address family 4"),
    (V2_SIGNATURE + b"\x21\x12\x00\x0c" + bytes(12), "transport 2"),
    (V2_SIGNATURE + b"\x21\x11\x00\x08" + bytes(8), "8 bytes cannot hold"),
    (V2_SIGNATURE + b"\x21\x21\x00\x0c" + bytes(12), "12 bytes cannot hold"),
    (V2_SIGNATURE + b"\x21\x31\x00\x0c" + bytes(12), "UNIX addresses in 12 bytes"),
    (V2_SIGNATURE[:5] + b"X", "no PROXY protocol header"),
])
def test_a_broken_header_is_an_error_as_soon_as_it_shows(wire, message):
    with pytest.raises(ProxyHeaderError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(wire)


def test_the_first_byte_of_mqtt_is_refused_at_once():
    with pytest.raises(ProxyHeaderError):
        parse(b"\x10")


def test_the_encoders_write_what_the_parser_reads():
    assert encode_v1(("203.0.113.9", 51234), ("192.0.2.1", 8883)) == V1_TCP4
    assert encode_v2(("203.0.113.9", 51234), ("192.0.2.1", 8883)) == V2_TCP4
    assert parse(encode_v2(("2001:db8::7", 1))).source == ("2001:db8::7", 1)
    assert parse(encode_v2(None)).why == "LOCAL"

"""The X-Forwarded-For walk: the right-most address that is not a trusted proxy is the client."""

from __future__ import annotations

import pytest

from broker.net.real_address import TrustedProxies, parse_ip

TRUSTED = TrustedProxies(["127.0.0.1", "::1", "10.0.0.0/8"])


@pytest.mark.parametrize(("headers", "client"), [
    ([b"203.0.113.9"], "203.0.113.9"),
    # nginx's $proxy_add_x_forwarded_for appends to what the client sent: the client's own
    # entries come first, so the first entry is whatever the client wrote.
    ([b"198.51.100.1, 203.0.113.9"], "203.0.113.9"),
    ([b"198.51.100.1", b"203.0.113.9"], "203.0.113.9"),  # the header twice: one list
    ([b"198.51.100.1, 203.0.113.9, 10.1.2.3, 127.0.0.1"], "203.0.113.9"),  # proxies skipped
    ([b"2001:db8::7, ::1"], "2001:db8::7"),
    ([b"::ffff:203.0.113.9"], "203.0.113.9"),
    ([b"10.0.0.5, 127.0.0.1"], "10.0.0.5"),  # every hop trusted: the left-most
    ([b"junk, 203.0.113.9"], "203.0.113.9"),  # junk left of the client is never read
    ([b"203.0.113.9, junk, 127.0.0.1"], "127.0.0.1"),  # junk from a proxy: stop there
    ([b"junk"], None),
    ([b" , "], None),
])
def test_the_walk_from_the_right_finds_the_first_untrusted_address(headers, client):
    assert TRUSTED.forwarded_client(headers)[0] == client


def test_a_walk_stopped_by_junk_says_why():
    assert TRUSTED.forwarded_client([b"1.2.3.4, nonsense"]) == (None, "stopped at 'nonsense', "
                                                                     "not an IP address")


def test_trust_is_by_address_and_network():
    assert TRUSTED.trusts(parse_ip("10.200.0.1")) and TRUSTED.trusts(parse_ip("::ffff:127.0.0.1"))
    assert not TRUSTED.trusts(parse_ip("127.0.0.2")) and not TRUSTED.trusts(None)
    assert not TrustedProxies([])

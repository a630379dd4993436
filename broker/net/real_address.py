"""Who the client really is when proxies stand between it and the broker (no I/O).

A proxy in `trusted_proxies` may name the client it relays: in `X-Forwarded-For` (WebSocket
listeners) or in a PROXY protocol header (`mqtt` listeners with `proxy_protocol = true`).
Only what a trusted hop wrote can be believed: every proxy appends the address it saw to
`X-Forwarded-For`, but the client may send the header already filled with whatever it likes.
So the chain is walked from the right (the hop nearest the broker) and the first address that
is not a trusted proxy is the client; the entries left of it were written by that client and
are ignored. An entry that is not an IP address ends the walk at the last trusted hop.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip(text: str) -> IPAddress | None:
    """An IP address without zone or brackets, IPv4-mapped IPv6 as IPv4; None if not one."""
    try:
        ip = ipaddress.ip_address(text.strip().strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class TrustedProxies:
    """The `trusted_proxies` of one listener: addresses and networks."""

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks = tuple(ipaddress.ip_network(n, strict=False) for n in networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, ip: IPAddress | None) -> bool:
        return ip is not None and any(ip in net for net in self.networks)

    def forwarded_client(self, forwarded_for: Iterable[bytes]) -> tuple[str | None, str]:
        """The client named by the `X-Forwarded-For` values (in header order) of a request
        from a trusted peer, walking from the right: (address, why the walk stopped short, or
        ""). The address is None when no entry can be believed (the peer is the client)."""
        entries = [entry.strip().decode("latin-1") for value in forwarded_for
                   for entry in value.split(b",") if entry.strip()]
        nearest: str | None = None
        for entry in reversed(entries):
            ip = parse_ip(entry)
            if ip is None:
                return nearest, f"stopped at {entry!r}, not an IP address"
            nearest = str(ip)
            if not self.trusts(ip):
                return nearest, ""
        # Every hop is a trusted proxy: the left-most is as far as the chain goes.
        return nearest, ""

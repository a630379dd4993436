"""The PROXY protocol header (HAProxy's, versions 1 and 2): bytes in, the client's address out.

A TCP proxy (nginx's stream module with `proxy_protocol on`, frp with
`transport.proxyProtocolVersion`, HAProxy) writes one header before the client's first byte,
naming the address it accepted the client from. Pure: no socket, no gevent; `parse` is given
the bytes read so far and says whether they hold a whole header, a prefix of one, or no header.

Rules (from the protocol's text, as HAProxy applies them):
- v1 is one text line, `PROXY TCP4|TCP6 SRC DST SPORT DPORT\\r\\n` or `PROXY UNKNOWN ...\\r\\n`,
  at most 107 bytes; single spaces; addresses of the family named; ports 0..65535 in decimal.
- v2 is the 12-byte signature, a version/command byte (0x20 LOCAL, 0x21 PROXY), a
  family/transport byte, a 16-bit length and that many bytes: the addresses (12 for INET,
  36 for INET6, 216 for UNIX), then TLVs, which are skipped.
- LOCAL (v2), UNKNOWN (v1) and the UNSPEC or UNIX family name no client address: the
  connection's own address stands (a proxy's health check, say). A header says nothing
  either way about what follows it.
- Anything else is malformed: there is no way to resynchronise a stream whose first bytes are
  not what the proxy promised, so the caller closes it.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
V1_MAX = 107  # bytes, CRLF included (the protocol's own bound)
V2_FIXED = 16  # signature, version/command, family/transport, length
# the family nibble of v2 -> (address block size, the address size, ipaddress class)
V2_FAMILIES = {0x1: (12, 4, ipaddress.IPv4Address), 0x2: (36, 16, ipaddress.IPv6Address)}
V2_UNIX = 0x3
V2_UNIX_BLOCK = 216
V1_FAMILIES = {b"TCP4": ipaddress.IPv4Address, b"TCP6": ipaddress.IPv6Address}


class ProxyHeaderError(ValueError):
    """The bytes are not a PROXY protocol header (or a broken one): close the connection."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    version: int  # 1 or 2
    length: int  # bytes of the stream the header took
    source: tuple[str, int] | None  # the client's (address, port); None: the peer stands
    destination: tuple[str, int] | None  # the address the proxy accepted it on
    why: str = ""  # why no address: "LOCAL", "UNKNOWN", "UNSPEC", "UNIX"


def could_start(data: bytes) -> bool:
    """True when `data` (at least one byte) may begin a header of either version."""
    n = min(len(data), len(V2_SIGNATURE))
    return data[:n] == V2_SIGNATURE[:n] or data[:min(n, 6)] == V1_PREFIX[:min(n, 6)]


def parse(data: bytes) -> ProxyHeader | None:
    """The header at the start of `data`, None if `data` is a prefix of one (read more);
    ProxyHeaderError when it cannot be one. Bytes after the header are not looked at."""
    if not data:
        return None
    if not could_start(data):
        raise ProxyHeaderError(f"no PROXY protocol header: the stream starts with "
                               f"{data[:16]!r}")
    if data[:1] == V2_SIGNATURE[:1]:
        return _parse_v2(data)
    return _parse_v1(data)


def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX or b"\n" in data[:V1_MAX]:
            raise ProxyHeaderError(f"PROXY v1 line without CRLF in its first {V1_MAX} bytes")
        return None
    line = data[:end]
    length = end + 2
    fields = line.split(b" ")
    if len(fields) < 2:
        raise ProxyHeaderError(f"PROXY v1 line {line!r}: no protocol")
    if fields[1] == b"UNKNOWN":
        # The rest of an UNKNOWN line is to be ignored (a proxy may not know the addresses).
        return ProxyHeader(1, length, None, None, "UNKNOWN")
    family = V1_FAMILIES.get(fields[1])
    if family is None:
        raise ProxyHeaderError(f"PROXY v1 line {line!r}: protocol {fields[1]!r} is not "
                               "TCP4, TCP6 or UNKNOWN")
    if len(fields) != 6:
        raise ProxyHeaderError(f"PROXY v1 line {line!r}: expected SRC DST SPORT DPORT")
    try:
        src, dst = (str(family(f.decode("ascii"))) for f in fields[2:4])
    except (ValueError, UnicodeDecodeError):
        raise ProxyHeaderError(f"PROXY v1 line {line!r}: an address that is not "
                               f"{fields[1].decode()}") from None
    sport, dport = (_port(f, line) for f in fields[4:6])
    return ProxyHeader(1, length, (src, sport), (dst, dport))


def _port(field: bytes, line: bytes) -> int:
    if not field.isdigit() or len(field) > 5 or (len(field) > 1 and field[:1] == b"0") \
            or int(field) > 65_535:
        raise ProxyHeaderError(f"PROXY v1 line {line!r}: port {field!r} is not 0..65535")
    return int(field)


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if len(data) < V2_FIXED:
        return None
    version_command, family_transport, size = struct.unpack_from("!BBH", data, 12)
    if version_command >> 4 != 2:
        raise ProxyHeaderError(f"PROXY v2 header with version {version_command >> 4}")
    command = version_command & 0x0F
    if command not in (0x0, 0x1):
        raise ProxyHeaderError(f"PROXY v2 header with command {command} (not LOCAL or PROXY)")
    length = V2_FIXED + size
    if len(data) < length:
        return None
    if command == 0x0:
        return ProxyHeader(2, length, None, None, "LOCAL")
    family, transport = family_transport >> 4, family_transport & 0x0F
    if family == 0x0:
        return ProxyHeader(2, length, None, None, "UNSPEC")
    if family == V2_UNIX:
        if size < V2_UNIX_BLOCK:
            raise ProxyHeaderError(f"PROXY v2 UNIX addresses in {size} bytes")
        return ProxyHeader(2, length, None, None, "UNIX")
    if family not in V2_FAMILIES:
        raise ProxyHeaderError(f"PROXY v2 header with address family {family}")
    if transport not in (0x0, 0x1):
        # Not a stream (DGRAM): this is a TCP listener.
        raise ProxyHeaderError(f"PROXY v2 header with transport {transport} (not STREAM)")
    block, size_of, cls = V2_FAMILIES[family]
    if size < block:
        raise ProxyHeaderError(f"PROXY v2 header: {size} bytes cannot hold two "
                               f"{cls.__name__[:4]} addresses and ports")
    body = data[V2_FIXED:V2_FIXED + block]
    src = str(cls(body[:size_of]))
    dst = str(cls(body[size_of:2 * size_of]))
    sport, dport = struct.unpack_from("!HH", body, 2 * size_of)
    return ProxyHeader(2, length, (src, sport), (dst, dport))


def encode_v1(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    """A v1 header (for tests and tools): TCP4 or TCP6 by the source address."""
    family = "TCP6" if ":" in source[0] else "TCP4"
    return (f"PROXY {family} {source[0]} {destination[0]} {source[1]} {destination[1]}\r\n"
            .encode("ascii"))


def encode_v2(source: tuple[str, int] | None, destination: tuple[str, int] | None = None,
              tlvs: bytes = b"") -> bytes:
    """A v2 header (for tests and tools): PROXY over TCP, or LOCAL when `source` is None."""
    if source is None:
        return V2_SIGNATURE + struct.pack("!BBH", 0x20, 0x00, len(tlvs)) + tlvs
    destination = destination or (("::" if ":" in source[0] else "0.0.0.0"), 0)
    src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    family = 0x21 if src.version == 6 else 0x11
    body = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1]) + tlvs
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, family, len(body)) + body

"""The first bytes a client sends: a CONNECT, or what else it looks like.

The first packet must be a CONNECT [MQTT-3.1.0-1], whose first byte is 0x10 (no fixed-header
flags at any level a CONNECT can name). Anything else is refused on that byte: waiting for a
whole packet would read 'G' of an HTTP GET as a PUBACK of 71 bytes and hold the socket until
`connect_timeout`. The usual strangers get a word for the operator: a browser or curl (HTTP,
which belongs on a websockets listener), a TLS client on a plain port, a proxy speaking the
PROXY protocol to a listener that does not expect it.
"""

from __future__ import annotations

CONNECT_FIRST_BYTE = 0x10

# What an HTTP/1.x request line starts with, and HTTP/2's connection preface ("PRI * ...").
_HTTP_METHODS = (b"GET ", b"HEAD ", b"POST ", b"PUT ", b"DELETE ", b"CONNECT ", b"OPTIONS ",
                 b"TRACE ", b"PATCH ", b"PRI ")
_TLS_HANDSHAKE = 0x16  # a TLS record of type handshake; 0x03 (the major version) follows
_PROXY_V1 = b"PROXY "
_PROXY_V2 = b"\r\n\r\n\x00\r\nQUIT\n"


def _starts_as(data: bytes, prefix: bytes) -> bool:
    """`data` begins with `prefix`, or is all of it there is so far."""
    n = min(len(data), len(prefix))
    return data[:n] == prefix[:n]


def not_connect(data: bytes) -> str | None:
    """None when `data` (the first bytes read, at least one) may begin a CONNECT; else why
    not, in words for the log."""
    first = data[0]
    if first == CONNECT_FIRST_BYTE:
        return None
    if any(_starts_as(data, method) for method in _HTTP_METHODS):
        hint = "this looks like HTTP (use the websockets listener)"
    elif first == _TLS_HANDSHAKE and (len(data) == 1 or data[1] == 0x03):
        hint = "this looks like TLS (use the mqtts listener / port)"
    elif _starts_as(data, _PROXY_V1) or _starts_as(data, _PROXY_V2):
        hint = "this looks like a PROXY protocol header (from a proxy this listener does not " \
               "expect it from)"
    else:
        hint = f"first byte 0x{first:02X}"
    # repr() escapes every control character: the client's bytes cannot forge log lines.
    return f"first packet is not CONNECT: {hint}; first bytes {data[:16]!r} [MQTT-3.1.0-1]"

"""Which MQTT 5 reason codes each packet may carry (5.0 section 2.4 and each packet's table).

The sender of every acknowledgement, DISCONNECT and AUTH must use one of its packet's reason
codes; a code outside that set is data the protocol does not allow in a packet that parsed,
so a Protocol Error (5.0 section 1.2), not a malformed packet. Which side may send which code
is not checked: the receiver acts on the code's meaning, and none of them is harmful.
`tests/unit/test_codec_v5_malformed.py` holds this table against the comments of
`ReasonCode`.
"""

from __future__ import annotations

from ..errors import ProtocolError

_PUBLISH_ACK = frozenset({0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99})
_PUBLISH_RELEASE = frozenset({0x00, 0x92})

# packet -> (its reason codes, the rule its sender breaks with any other)
REASONS: dict[str, tuple[frozenset[int], str]] = {
    "CONNACK": (frozenset({0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
                           0x8A, 0x8C, 0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F}),
                "[MQTT-3.2.2-8]"),
    "PUBACK": (_PUBLISH_ACK, "[MQTT-3.4.2-1]"),
    "PUBREC": (_PUBLISH_ACK, "[MQTT-3.5.2-1]"),
    "PUBREL": (_PUBLISH_RELEASE, "[MQTT-3.6.2-1]"),
    "PUBCOMP": (_PUBLISH_RELEASE, "[MQTT-3.7.2-1]"),
    "SUBACK": (frozenset({0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1,
                          0xA2}), "[MQTT-3.9.3-2]"),
    "UNSUBACK": (frozenset({0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91}), "[MQTT-3.11.3-2]"),
    "DISCONNECT": (frozenset({0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8C, 0x8D,
                              0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A,
                              0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2}),
                   "[MQTT-3.14.2-1]"),
    "AUTH": (frozenset({0x00, 0x18, 0x19}), "[MQTT-3.15.2-1]"),
}


def check_reason(packet: str, code: int) -> None:
    """Raise `ProtocolError` unless `code` is one of `packet`'s reason codes."""
    codes, rule = REASONS[packet]
    if code not in codes:
        raise ProtocolError(f"{packet}: reason code 0x{code:02X} is not one of its codes {rule}")

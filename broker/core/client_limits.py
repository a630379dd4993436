"""`ClientLimits`: what an MQTT 5 client and the broker told each other in CONNECT and
CONNACK, kept per connection. For MQTT 3.x every field keeps its default, which is what
3.1.1 implies (no alias, no receive maximum but the broker's own window, any packet size):
those connections share `DEFAULTS`, never written to, and an MQTT 5 CONNECT gets its own
(`own_limits`), so an idle 3.1.1 connection costs no `ClientLimits` of its own."""

from __future__ import annotations

from ..config.schema import LimitsSection

DEFAULT_RECEIVE_MAXIMUM = 65_535  # what MQTT 5 means when CONNECT/CONNACK say nothing


def receive_maximum(limits: LimitsSection) -> int:
    """The broker's receive maximum (CONNACK): how many QoS 2 PUBLISHes an MQTT 5 client may
    have unreleased; the window the broker keeps towards clients, or 65,535 when unlimited."""
    window = limits.max_inflight_messages
    return window if 0 < window < DEFAULT_RECEIVE_MAXIMUM else DEFAULT_RECEIVE_MAXIMUM


class ClientLimits:
    __slots__ = ("receive_maximum", "maximum_packet_size", "topic_alias_maximum",
                 "request_problem_information", "request_response_information",
                 "inbound_aliases", "outbound_aliases", "session_expiry")

    def __init__(self) -> None:
        # QoS 1/2 PUBLISHes the client takes unacknowledged
        self.receive_maximum = DEFAULT_RECEIVE_MAXIMUM
        self.maximum_packet_size = 0  # the largest packet the client accepts; 0: no limit
        self.topic_alias_maximum = 0  # aliases the client accepts from the broker
        self.request_problem_information = True  # reason strings beyond CONNACK/DISCONNECT
        self.request_response_information = False
        # alias -> topic, set by the client; None until its first alias
        self.inbound_aliases: dict[int, str] | None = None
        # topic -> alias, set by the broker (core/delivery.py); None until the first
        self.outbound_aliases: dict[str, int] | None = None
        self.session_expiry = 0  # seconds; 0xFFFFFFFF: never


DEFAULTS = ClientLimits()  # every MQTT 3.x connection's, and a v5 one's until its CONNECT


def own_limits(current: ClientLimits) -> ClientLimits:
    """Limits this connection may write to: `current` if its own, else a new copy of the
    defaults (an MQTT 5 CONNECT, a DISCONNECT's session expiry)."""
    return ClientLimits() if current is DEFAULTS else current

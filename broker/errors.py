"""Reason codes and the exceptions that carry them.

One vocabulary for the whole broker: the protocol raises `MQTTError` with an MQTT 5 reason
code, and the codec maps it to the MQTT 3.1/3.1.1 CONNACK return code where the wire needs
one. Config problems are `ConfigError`, which names the file, line and key.
"""

from __future__ import annotations

from enum import IntEnum


class ReasonCode(IntEnum):
    """MQTT 5 reason codes (spec 2.4). Comments name the packets each may appear in."""

    SUCCESS = 0x00  # CONNACK PUBACK PUBREC PUBREL PUBCOMP UNSUBACK AUTH DISCONNECT; SUBACK QoS 0
    GRANTED_QOS_1 = 0x01  # SUBACK
    GRANTED_QOS_2 = 0x02  # SUBACK
    DISCONNECT_WITH_WILL = 0x04  # DISCONNECT
    NO_MATCHING_SUBSCRIBERS = 0x10  # PUBACK PUBREC
    NO_SUBSCRIPTION_EXISTED = 0x11  # UNSUBACK
    CONTINUE_AUTHENTICATION = 0x18  # AUTH
    REAUTHENTICATE = 0x19  # AUTH
    UNSPECIFIED_ERROR = 0x80  # CONNACK PUBACK PUBREC SUBACK UNSUBACK DISCONNECT
    MALFORMED_PACKET = 0x81  # CONNACK DISCONNECT
    PROTOCOL_ERROR = 0x82  # CONNACK DISCONNECT
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83  # CONNACK PUBACK PUBREC SUBACK UNSUBACK DISCONNECT
    UNSUPPORTED_PROTOCOL_VERSION = 0x84  # CONNACK
    CLIENT_IDENTIFIER_NOT_VALID = 0x85  # CONNACK
    BAD_USER_NAME_OR_PASSWORD = 0x86  # CONNACK
    NOT_AUTHORIZED = 0x87  # CONNACK PUBACK PUBREC SUBACK UNSUBACK DISCONNECT
    SERVER_UNAVAILABLE = 0x88  # CONNACK
    SERVER_BUSY = 0x89  # CONNACK DISCONNECT
    BANNED = 0x8A  # CONNACK
    SERVER_SHUTTING_DOWN = 0x8B  # DISCONNECT
    BAD_AUTHENTICATION_METHOD = 0x8C  # CONNACK DISCONNECT
    KEEP_ALIVE_TIMEOUT = 0x8D  # DISCONNECT
    SESSION_TAKEN_OVER = 0x8E  # DISCONNECT
    TOPIC_FILTER_INVALID = 0x8F  # SUBACK UNSUBACK DISCONNECT
    TOPIC_NAME_INVALID = 0x90  # CONNACK PUBACK PUBREC DISCONNECT
    PACKET_IDENTIFIER_IN_USE = 0x91  # PUBACK PUBREC SUBACK UNSUBACK
    PACKET_IDENTIFIER_NOT_FOUND = 0x92  # PUBREL PUBCOMP
    RECEIVE_MAXIMUM_EXCEEDED = 0x93  # DISCONNECT
    TOPIC_ALIAS_INVALID = 0x94  # DISCONNECT
    PACKET_TOO_LARGE = 0x95  # CONNACK DISCONNECT
    MESSAGE_RATE_TOO_HIGH = 0x96  # DISCONNECT
    QUOTA_EXCEEDED = 0x97  # CONNACK PUBACK PUBREC SUBACK DISCONNECT
    ADMINISTRATIVE_ACTION = 0x98  # DISCONNECT
    PAYLOAD_FORMAT_INVALID = 0x99  # CONNACK PUBACK PUBREC DISCONNECT
    RETAIN_NOT_SUPPORTED = 0x9A  # CONNACK DISCONNECT
    QOS_NOT_SUPPORTED = 0x9B  # CONNACK DISCONNECT
    USE_ANOTHER_SERVER = 0x9C  # CONNACK DISCONNECT
    SERVER_MOVED = 0x9D  # CONNACK DISCONNECT
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E  # SUBACK DISCONNECT
    CONNECTION_RATE_EXCEEDED = 0x9F  # CONNACK DISCONNECT
    MAXIMUM_CONNECT_TIME = 0xA0  # DISCONNECT
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1  # SUBACK DISCONNECT
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2  # SUBACK DISCONNECT


class ConnAckCodeV3(IntEnum):
    """MQTT 3.1 / 3.1.1 CONNACK return codes (3.1.1 table 3.1)."""

    ACCEPTED = 0x00
    UNACCEPTABLE_PROTOCOL_VERSION = 0x01
    IDENTIFIER_REJECTED = 0x02
    SERVER_UNAVAILABLE = 0x03
    BAD_USER_NAME_OR_PASSWORD = 0x04
    NOT_AUTHORIZED = 0x05


# How a CONNACK reason is said to an MQTT 3.x client; anything unlisted is "server unavailable".
CONNACK_V3_FROM_REASON: dict[int, ConnAckCodeV3] = {
    ReasonCode.SUCCESS: ConnAckCodeV3.ACCEPTED,
    ReasonCode.UNSUPPORTED_PROTOCOL_VERSION: ConnAckCodeV3.UNACCEPTABLE_PROTOCOL_VERSION,
    ReasonCode.CLIENT_IDENTIFIER_NOT_VALID: ConnAckCodeV3.IDENTIFIER_REJECTED,
    ReasonCode.SERVER_UNAVAILABLE: ConnAckCodeV3.SERVER_UNAVAILABLE,
    ReasonCode.SERVER_BUSY: ConnAckCodeV3.SERVER_UNAVAILABLE,
    ReasonCode.BAD_USER_NAME_OR_PASSWORD: ConnAckCodeV3.BAD_USER_NAME_OR_PASSWORD,
    ReasonCode.NOT_AUTHORIZED: ConnAckCodeV3.NOT_AUTHORIZED,
    ReasonCode.BANNED: ConnAckCodeV3.NOT_AUTHORIZED,
}

REASON_FROM_CONNACK_V3: dict[int, ReasonCode] = {
    ConnAckCodeV3.ACCEPTED: ReasonCode.SUCCESS,
    ConnAckCodeV3.UNACCEPTABLE_PROTOCOL_VERSION: ReasonCode.UNSUPPORTED_PROTOCOL_VERSION,
    ConnAckCodeV3.IDENTIFIER_REJECTED: ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
    ConnAckCodeV3.SERVER_UNAVAILABLE: ReasonCode.SERVER_UNAVAILABLE,
    ConnAckCodeV3.BAD_USER_NAME_OR_PASSWORD: ReasonCode.BAD_USER_NAME_OR_PASSWORD,
    ConnAckCodeV3.NOT_AUTHORIZED: ReasonCode.NOT_AUTHORIZED,
}


class MQTTError(Exception):
    """A protocol-level failure: the connection it happened on answers with `reason_code`."""

    default_reason = ReasonCode.UNSPECIFIED_ERROR

    def __init__(self, message: str, reason_code: ReasonCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason_code = self.default_reason if reason_code is None else reason_code


class MalformedPacket(MQTTError):
    """Bytes that are not a valid packet: the connection is closed [MQTT-4.13.1-1]."""

    default_reason = ReasonCode.MALFORMED_PACKET


class ProtocolError(MQTTError):
    """A well-formed packet that breaks the protocol's rules (order, state, ids)."""

    default_reason = ReasonCode.PROTOCOL_ERROR


class UnsupportedProtocolVersion(MQTTError):
    """A CONNECT for a protocol level we do not speak: answered with CONNACK 0x01 [MQTT-3.1.2-2]."""

    default_reason = ReasonCode.UNSUPPORTED_PROTOCOL_VERSION


class PacketTooLarge(MQTTError):
    """A declared remaining length above the allowed maximum; nothing of it is buffered."""

    default_reason = ReasonCode.PACKET_TOO_LARGE


class StoreUnavailable(MQTTError):
    """The session store cannot make records durable (disk full, I/O error): acknowledgements
    that depend on it are not sent, and the connection waiting for one is closed."""

    default_reason = ReasonCode.UNSPECIFIED_ERROR


class ConfigError(Exception):
    """A configuration that cannot be used: names the file, line and key, and what was expected."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 key: str | None = None) -> None:
        self.file = file
        self.line = line
        self.key = key
        self.reason = message
        where = ""
        if file:
            where = f"{file}:{line}: " if line else f"{file}: "
        what = f"{key}: " if key else ""
        super().__init__(f"{where}{what}{message}")

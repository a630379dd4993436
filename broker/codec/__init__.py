"""The sans-I/O MQTT codec: packet classes, `FrameDecoder` and `encode`. No sockets, no gevent."""

from .acks import (
    PubAck,
    PubComp,
    PubRec,
    PubRel,
    encode_puback_success,
    encode_pubcomp_success,
    encode_pubrec_success,
)
from .connect import MQTT_3_1, MQTT_3_1_1, MQTT_5, ConnAck, Connect, Will
from .control import Auth, Disconnect, PingReq, PingResp
from .frame import CONNECT_PACKET_LIMIT, PACKET_NAMES, FrameDecoder, Packet, encode
from .properties import NO_PROPERTIES
from .publish import Publish
from .subscribe import SubAck, SubOptions, Subscribe, UnsubAck, Unsubscribe

__all__ = [
    "CONNECT_PACKET_LIMIT", "MQTT_3_1", "MQTT_3_1_1", "MQTT_5", "NO_PROPERTIES", "PACKET_NAMES",
    "Auth", "ConnAck", "Connect", "Disconnect", "FrameDecoder", "Packet", "PingReq", "PingResp",
    "PubAck", "PubComp", "PubRec", "PubRel", "Publish", "SubAck", "SubOptions", "Subscribe",
    "UnsubAck", "Unsubscribe", "Will", "encode",
    "encode_puback_success", "encode_pubcomp_success", "encode_pubrec_success",
]

"""Which acknowledgement a delivery in flight waits for, and what a wrong one is.

A QoS 1 delivery is settled by PUBACK [MQTT-4.3.2-1]; a QoS 2 one by PUBREC, then (after
the broker's PUBREL) PUBCOMP [MQTT-4.3.3-1]. The acknowledgement of the other flow, or a
PUBCOMP before PUBREC, breaks the flow the client agreed to: a protocol violation, which
closes the connection [MQTT-4.8.0-1] (MQTT 5: DISCONNECT 0x82), as Mosquitto does. An ack
for an id that is not in flight is not judged here: it is a late duplicate, tolerated.
"""

from __future__ import annotations

from ..errors import ProtocolError
from .delivery import Delivery


def check_ack(kind: str, packet_id: int, flight: Delivery) -> None:
    """Raise `ProtocolError` unless `kind` (PUBACK, PUBREC, PUBCOMP) is an acknowledgement
    `flight`, in flight with `packet_id`, may take now."""
    if kind == "PUBACK":
        if flight.qos != 1:
            raise ProtocolError(f"PUBACK for packet id {packet_id}, a QoS 2 message "
                                "[MQTT-4.3.3-1] [MQTT-4.8.0-1]")
    elif flight.qos != 2:
        raise ProtocolError(f"{kind} for packet id {packet_id}, a QoS 1 message "
                            "[MQTT-4.3.2-1] [MQTT-4.8.0-1]")
    elif kind == "PUBCOMP" and not flight.released:
        raise ProtocolError(f"PUBCOMP for packet id {packet_id} before its PUBREC "
                            "[MQTT-4.3.3-1] [MQTT-4.8.0-1]")

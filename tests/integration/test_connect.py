"""CONNECT / CONNACK over real sockets: refusal codes, clean session, session present,
assigned client ids, takeover [MQTT-3.1.4-2]."""

from __future__ import annotations

import paho.mqtt.client as paho
import pytest
from support.clients import PahoClient, RawClient, unique

from broker.codec import ConnAck, Connect


def test_connack_accepts_a_plain_3_1_1_client_byte_exact(broker):
    raw = RawClient(broker.port)
    # CONNECT "MQTT" level 4, clean session, keepalive 60, client id "exact-1"
    raw.send(bytes.fromhex("101300044d5154540402003c0007") + b"exact-1")
    assert raw.recv_bytes(4) == bytes.fromhex("20020000")
    raw.close()


def test_mqtt_3_1_mqisdp_client_is_accepted(broker):
    raw = RawClient(broker.port)
    client_id = b"mqisdp-client-with-a-long-id-30"
    body = bytes.fromhex("00064d5149736470") + bytes((3, 0x02)) + b"\x00\x3c"
    body += len(client_id).to_bytes(2, "big") + client_id
    raw.send(bytes((0x10, len(body))) + body)
    assert raw.recv_bytes(4) == bytes.fromhex("20020000")
    broker.wait_for_log(r"client connected: mqisdp-client-with-a-long-id-30 .* protocol=3")


def test_unsupported_protocol_level_gets_connack_1_then_close(broker):
    raw = RawClient(broker.port)
    raw.send(bytes.fromhex("101000044d51545406020000000461626364"))
    assert raw.recv_bytes(4) == bytes.fromhex("20020001")  # [MQTT-3.1.2-2]
    assert raw.closed_by_broker()


def test_empty_client_id_with_clean_session_gets_an_assigned_id(broker):
    broker.mark_log()
    raw = RawClient(broker.port)
    raw.send(bytes.fromhex("100c00044d5154540402003c0000"))
    assert raw.recv_bytes(4) == bytes.fromhex("20020000")
    broker.wait_for_log(r"client connected: auto-[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-"
                        r"[0-9A-F]{4}-[0-9A-F]{12} from 127\.0\.0\.1:\d+")


@pytest.mark.parametrize("connect_hex", [
    "100c00044d5154540400003c0000",  # 3.1.1, clean session 0 [MQTT-3.1.3-8]
    "100e00064d51497364700302003c0000",  # 3.1 (MQIsdp) needs a client id, even with clean 1
], ids=["3.1.1-clean-0", "3.1-mqisdp"])
def test_empty_client_id_refused_with_identifier_rejected(broker, connect_hex):
    raw = RawClient(broker.port)
    raw.send(bytes.fromhex(connect_hex))
    assert raw.recv_bytes(4) == bytes.fromhex("20020002")
    assert raw.closed_by_broker()


def test_keepalive_above_max_keepalive_is_refused(broker_factory):
    proc = broker_factory("[limits]\nmax_keepalive = 10\n")
    raw = RawClient(proc.port)
    assert raw.connect(unique(), keepalive=20) == ConnAck(0x85, False)
    assert raw.closed_by_broker()
    ok = RawClient(proc.port)
    assert ok.connect(unique(), keepalive=10) == ConnAck(0, False)
    assert RawClient(proc.port).connect(unique(), keepalive=0) == ConnAck(0, False)


def test_anonymous_refused_when_not_allowed(broker_factory):
    proc = broker_factory("[broker]\nallow_anonymous = false\n")
    raw = RawClient(proc.port)
    reply = raw.connect(unique())
    assert reply.reason_code == 0x87 and not reply.session_present  # CONNACK 0x05 on the wire
    assert raw.closed_by_broker()
    proc.wait_for_log(r"connection refused: .*anonymous")


def test_connack_5_on_the_wire_for_refused_anonymous(broker_factory):
    proc = broker_factory("[broker]\nallow_anonymous = false\n")
    raw = RawClient(proc.port)
    raw.send(bytes.fromhex("100d00044d5154540402003c000161"))
    assert raw.recv_bytes(4) == bytes.fromhex("20020005")


def test_session_present_is_0_for_a_new_and_1_for_a_resumed_persistent_session(broker):
    client_id = unique("persist")
    first = PahoClient(broker.port, client_id, clean_session=False)
    assert first.connect() == (False, 0)
    first.disconnect()
    second = PahoClient(broker.port, client_id, clean_session=False)
    assert second.connect() == (True, 0)
    second.disconnect()
    clean = PahoClient(broker.port, client_id, clean_session=True)
    assert clean.connect() == (False, 0)  # clean session discards it
    clean.disconnect()
    again = PahoClient(broker.port, client_id, clean_session=False)
    assert again.connect() == (False, 0)
    again.disconnect()


def _mqisdp_connect(client_id: bytes) -> bytes:
    """An MQTT 3.1 CONNECT ("MQIsdp", level 3), clean session 0, keepalive 60."""
    body = bytes.fromhex("00064d5149736470") + bytes((3, 0x00)) + b"\x00\x3c"
    body += len(client_id).to_bytes(2, "big") + client_id
    return bytes((0x10, len(body))) + body


def test_mqtt_3_1_resumed_session_gets_connack_without_session_present(broker):
    """3.1's CONNACK has no session present flag: its first byte is reserved and 0 (3.1
    section 3.2), as Mosquitto sends it. The session is still resumed."""
    client_id = unique("mqisdp-persist").encode()
    first = RawClient(broker.port)
    first.send(_mqisdp_connect(client_id))
    assert first.recv_bytes(4) == bytes.fromhex("20020000")
    first.send(bytes.fromhex("8209000100046d712f3101"))  # SUBSCRIBE mq/1 at QoS 1 (3.1: 0x82)
    assert first.recv_bytes(5) == bytes.fromhex("9003000101")
    first.send(bytes.fromhex("e000"))
    assert first.closed_by_broker()
    broker.mark_log()
    second = RawClient(broker.port)
    second.send(_mqisdp_connect(client_id))
    assert second.recv_bytes(4) == bytes.fromhex("20020000")  # not 20020100
    broker.wait_for_log(rf"client connected: {client_id.decode()} .*protocol=3 .*"
                        r"session_present=1")
    publisher = PahoClient(broker.port)
    publisher.connect()
    publisher.publish("mq/1", b"kept", qos=1)
    message = second.recv_packet()
    assert (message.topic, message.payload) == ("mq/1", b"kept")
    publisher.disconnect()


def test_paho_mqtt_3_1_client_resumes_its_session(broker):
    client_id = unique("paho31")
    first = PahoClient(broker.port, client_id, clean_session=False, protocol=paho.MQTTv31)
    assert first.connect() == (False, 0)
    first.disconnect()
    second = PahoClient(broker.port, client_id, clean_session=False, protocol=paho.MQTTv31)
    assert second.connect() == (False, 0)  # 3.1 has no flag to say it
    second.disconnect()


def test_session_takeover_closes_the_first_connection_and_keeps_the_session(broker):
    client_id = unique("takeover")
    first = RawClient(broker.port)
    assert first.connect(client_id, clean=False) == ConnAck(0, False)
    assert first.subscribe("takeover/+/x", qos=1).reason_codes == (1,)
    broker.mark_log()
    second = RawClient(broker.port)
    assert second.connect(client_id, clean=False) == ConnAck(0, True)  # [MQTT-3.1.4-2]
    assert first.closed_by_broker()
    broker.wait_for_log(rf"client disconnected: {client_id} .*reason=session taken over")
    publisher = PahoClient(broker.port)
    publisher.connect()
    publisher.publish("takeover/a/x", b"still subscribed", qos=1)
    message = second.recv_packet()
    assert (message.topic, message.payload, message.qos) == ("takeover/a/x", b"still subscribed", 1)
    publisher.disconnect()


def test_second_connect_on_one_connection_is_a_protocol_error(broker):
    raw = RawClient(broker.port)
    client_id = unique()
    assert raw.connect(client_id) == ConnAck(0, False)
    raw.send_packet(Connect(client_id))
    assert raw.closed_by_broker()
    broker.wait_for_log(rf"closing {client_id} .*second CONNECT")

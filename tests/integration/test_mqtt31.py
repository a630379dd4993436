"""MQTT 3.1 clients, judged by 3.1's rules. 3.1 gives every packet DUP and QoS bits and tells
a client to set DUP when it resends PUBREL, SUBSCRIBE or UNSUBSCRIBE (3.1 section 4.1); 3.1.1
made those bits reserved [MQTT-2.2.2-2]. Mosquitto checks them for 3.1.1 and 5 only; so does
greenfly, and a 3.1 client's QoS 2 retry completes."""

from __future__ import annotations

import pytest
from support.clients import PahoClient, RawClient, unique

from broker.codec import Connect, PingReq, PingResp, PubComp, Publish, PubRec

MQTT_3_1 = 3


def _client_3_1(broker, client_id: str) -> RawClient:
    raw = RawClient(broker.port, protocol_level=MQTT_3_1)
    raw.send_packet(Connect(client_id, protocol_level=MQTT_3_1, keepalive=60), MQTT_3_1)
    assert raw.recv_bytes(4) == bytes.fromhex("20020000")
    return raw


def _still_open(raw: RawClient) -> None:
    raw.send_packet(PingReq(), MQTT_3_1)
    assert raw.recv_packet() == PingResp()


@pytest.mark.parametrize("pubrel", ["6a", "62", "60"], ids=["dup-retry", "plain", "qos-0"])
def test_mqtt_3_1_pubrel_with_3_1_flags_completes_the_qos2_flow(broker, pubrel):
    topic = f"{unique('q2-31')}/t"
    sub = PahoClient(broker.port)
    sub.connect()
    sub.subscribe(topic, 2)
    pub = _client_3_1(broker, unique("pub31"))
    pub.send_packet(Publish(topic, b"once", qos=2, packet_id=5), MQTT_3_1)
    assert pub.recv_packet() == PubRec(5)
    pub.send(bytes.fromhex(pubrel + "020005"))  # PUBREL id 5; 0x6A: DUP set, as a retry has it
    assert pub.recv_packet() == PubComp(5)
    _still_open(pub)
    assert [m.payload for m in sub.expect(1)] == [b"once"]
    sub.disconnect()


def test_mqtt_3_1_pubrel_retry_after_pubcomp_was_lost_gets_pubcomp_again(broker):
    pub = _client_3_1(broker, unique("retry31"))
    pub.send_packet(Publish("r31/t", b"x", qos=2, packet_id=9), MQTT_3_1)
    assert pub.recv_packet() == PubRec(9)
    pub.send(bytes.fromhex("62020009"))
    assert pub.recv_packet() == PubComp(9)
    pub.send(bytes.fromhex("6a020009"))  # the client did not see the PUBCOMP: DUP retry
    assert pub.recv_packet() == PubComp(9)
    _still_open(pub)


@pytest.mark.parametrize(("packet", "answer"), [
    ("8a0800020003612f6201", "9003000201"),  # SUBSCRIBE a/b QoS 1, DUP and QoS 1 set
    ("800800020003612f6201", "9003000201"),  # SUBSCRIBE with QoS 0 in its header
    ("aa0700030003612f62", "b0020003"),  # UNSUBSCRIBE a/b, DUP and QoS 1 set
    ("a00700030003612f62", "b0020003"),  # UNSUBSCRIBE with QoS 0 in its header
], ids=["subscribe-dup", "subscribe-qos-0", "unsubscribe-dup", "unsubscribe-qos-0"])
def test_mqtt_3_1_subscribe_and_unsubscribe_flags_are_accepted(broker, packet, answer):
    raw = _client_3_1(broker, unique("sub31"))
    raw.send(bytes.fromhex(packet))
    assert raw.recv_bytes(len(answer) // 2) == bytes.fromhex(answer)
    _still_open(raw)


@pytest.mark.parametrize("packet", ["6a020005", "8a0800020003612f6201", "aa0700030003612f62"],
                         ids=["pubrel-dup", "subscribe-dup", "unsubscribe-dup"])
def test_mqtt_3_1_1_client_with_the_same_flags_is_still_closed(broker, packet):
    broker.mark_log()
    raw = RawClient(broker.port)
    client_id = unique("strict311")
    raw.connect(client_id)
    raw.send(bytes.fromhex(packet))
    assert raw.closed_by_broker()
    line = broker.wait_for_log(rf"closing {client_id} .*reserved fixed-header flags.*").group(0)
    assert "[MQTT-2.2.2-2]" in line, line

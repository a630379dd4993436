"""ClientProtocol without a socket: CONNECT refusals, takeover, wills, retained messages.

Every test speaks bytes to real connections of the in-process harness (tests/support/
inprocess.py) and asserts on what the clients read back, decoded as a client decodes them.
"""

from __future__ import annotations

import pytest
from support.inprocess import NO_PERSISTENCE, InProcessBroker

from broker.codec import (
    MQTT_5,
    ConnAck,
    Connect,
    Disconnect,
    PingReq,
    PingResp,
    Publish,
    SubAck,
    SubOptions,
    Subscribe,
    Will,
)
from broker.core.protocol import KEEPALIVE_TIMEOUT, TAKEOVER, AuthResult
from broker.errors import ReasonCode


@pytest.fixture
def broker() -> InProcessBroker:
    return InProcessBroker(NO_PERSISTENCE + "[limits]\nmax_keepalive = 100\n")


def subscriber(broker: InProcessBroker, topic_filter: str, qos: int = 0, **fields):
    client = broker.connected(f"watch-{topic_filter}", **fields)
    client.send(Subscribe(1, ((topic_filter, SubOptions(qos)),)))
    assert client.received() == [SubAck(1, (qos,))]
    return client


# -- CONNECT refusals --------------------------------------------------------------------------


def test_empty_client_id_with_clean_session_0_is_refused_with_0x02(broker):
    client = broker.connect("", clean=False)
    assert bytes(client.transport.data) == b"\x20\x02\x00\x02"  # [MQTT-3.1.3-8]
    assert client.closed is not None and not client.closed.publish_will
    assert client.transport.closed_with == [ReasonCode.CLIENT_IDENTIFIER_NOT_VALID]
    assert len(broker.ctx.registry) == 0
    assert broker.stats.clients_connected == 0


def test_empty_client_id_with_clean_session_1_gets_an_id_of_its_own(broker):
    client = broker.connected("")
    assert client.protocol.client_id.startswith("auto-")
    assert broker.ctx.registry.get(client.protocol.client_id) is client.session


def test_keepalive_above_max_keepalive_is_refused_for_3_1_1(broker):
    client = broker.connect("slow-pinger", keepalive=101)
    assert bytes(client.transport.data) == b"\x20\x02\x00\x02"
    assert "keepalive 101 exceeds max_keepalive 100" in client.closed.text
    assert broker.ctx.registry.get("slow-pinger") is None


def test_keepalive_at_max_keepalive_is_accepted(broker):
    client = broker.connected("pinger", keepalive=100)
    assert client.protocol.keepalive == 100


def test_keepalive_above_max_keepalive_is_lowered_for_mqtt_5(broker):
    client = broker.connected("v5-pinger", keepalive=500, protocol_level=MQTT_5)
    assert client.connack.properties["server_keep_alive"] == 100
    assert client.protocol.keepalive == 100


@pytest.mark.parametrize(("level", "wire_code"), [(4, 0x04), (MQTT_5, 0x86)])
def test_refused_verdict_answers_bad_credentials_and_opens_no_session(broker, level,
                                                                      wire_code):
    broker.security.refused["mallory"] = AuthResult(ReasonCode.BAD_USER_NAME_OR_PASSWORD,
                                                     "mallory", "wrong password")
    client = broker.connect("dev-9", username="mallory", password=b"guess",
                            protocol_level=level)
    [ack] = client.received()
    assert isinstance(ack, ConnAck) and ack.reason_code == ReasonCode.BAD_USER_NAME_OR_PASSWORD
    assert client.transport.data[3] == wire_code
    assert client.closed is not None
    assert [request.password for request in broker.security.requests] == [b"guess"]
    assert broker.ctx.registry.get("dev-9") is None
    assert broker.stats.clients_connected == 0


def test_first_packet_other_than_connect_closes_without_an_answer(broker):
    client = broker.open()
    client.send(PingReq())
    assert client.received() == []
    assert client.closed.text.startswith("protocol error") and "[MQTT-3.1.0-1]" in \
        client.closed.text


def test_second_connect_closes_the_connection(broker):
    client = broker.connected("twice")
    client.send(Connect("twice", keepalive=0))
    assert client.received() == []
    assert "[MQTT-3.1.0-2]" in client.closed.text
    assert broker.ctx.registry.get("twice") is None  # a clean session ends with it


def test_pingreq_is_answered(broker):
    client = broker.connected("pinger")
    client.send(PingReq())
    assert client.received() == [PingResp()]


# -- takeover ----------------------------------------------------------------------------------


def test_takeover_closes_the_old_connection_and_publishes_its_will(broker):
    watch = subscriber(broker, "wills/#")
    old = broker.connected("dev-1", clean=False, will=Will("wills/dev-1", b"gone"))
    new = broker.connected("dev-1", clean=False)
    assert old.closed is TAKEOVER  # [MQTT-3.1.4-2]
    assert old.transport.closed_with == [ReasonCode.SESSION_TAKEN_OVER]
    assert old.received() == []  # a 3.1.1 client has no word for it: the socket closes
    assert new.connack.session_present
    assert watch.received() == [Publish("wills/dev-1", b"gone")]
    assert broker.ctx.registry.get("dev-1").peer is new.connection
    assert broker.stats.clients_connected == 2


def test_takeover_tells_an_mqtt_5_client_why(broker):
    old = broker.connected("dev-5", protocol_level=MQTT_5)
    broker.connected("dev-5", protocol_level=MQTT_5)
    assert old.received() == [Disconnect(ReasonCode.SESSION_TAKEN_OVER)]
    assert old.closed is TAKEOVER


def test_takeover_of_a_clean_session_starts_afresh(broker):
    old = broker.connected("dev-2")
    old.send(Subscribe(1, (("a", SubOptions(1)),)))
    old.received()
    new = broker.connected("dev-2")
    assert not new.connack.session_present
    assert new.session is not old.session and new.session.subscriptions == {}
    broker.connected("pub").send(Publish("a", b"x", 1, packet_id=1))
    assert new.received() == []  # the old subscription went with the old session


# -- wills -------------------------------------------------------------------------------------


def test_will_is_published_when_the_connection_is_lost(broker):
    watch = subscriber(broker, "wills/#", qos=1)
    client = broker.connected("dev-3", will=Will("wills/dev-3", b"lost", qos=1))
    client.lose()
    [will] = watch.received()
    assert (will.topic, will.payload, will.qos, will.dup) == ("wills/dev-3", b"lost", 1, False)


def test_will_is_published_on_keepalive_timeout(broker):
    watch = subscriber(broker, "wills/#")
    client = broker.connected("dev-4", keepalive=10, will=Will("wills/dev-4", b"silent"))
    client.lose(KEEPALIVE_TIMEOUT)
    assert watch.received() == [Publish("wills/dev-4", b"silent")]


def test_will_is_not_published_after_disconnect(broker):
    watch = subscriber(broker, "wills/#")
    client = broker.connected("dev-6", will=Will("wills/dev-6", b"bye"))
    client.send(Disconnect())
    assert client.closed.text == "client DISCONNECT"  # [MQTT-3.14.4-3]
    assert client.transport.closed_with == [ReasonCode.SUCCESS]
    client.lose()  # the socket closing after DISCONNECT changes nothing
    assert watch.received() == []


def test_mqtt_5_disconnect_with_will_publishes_it(broker):
    watch = subscriber(broker, "wills/#")
    client = broker.connected("dev-7", protocol_level=MQTT_5, will=Will("wills/dev-7", b"w"))
    client.send(Disconnect(ReasonCode.DISCONNECT_WITH_WILL))
    assert watch.received() == [Publish("wills/dev-7", b"w")]


def test_retained_will_is_kept_for_later_subscribers(broker):
    client = broker.connected("dev-8", will=Will("wills/dev-8", b"offline", retain=True))
    client.lose()
    late = broker.connected("late")
    late.send(Subscribe(1, (("wills/+", SubOptions(0)),)))
    assert late.received() == [SubAck(1, (0,)), Publish("wills/dev-8", b"offline",
                                                        retain=True)]


# -- retained messages -------------------------------------------------------------------------


def test_retained_message_goes_to_a_new_subscription_with_retain_1(broker):
    publisher = broker.connected("sensor")
    publisher.send(Publish("home/temp", b"21.5", retain=True))
    new = broker.connected("panel")
    new.send(Subscribe(3, (("home/+", SubOptions(1)),)))
    assert new.received() == [SubAck(3, (1,)), Publish("home/temp", b"21.5", 0, True)]
    assert broker.ctx.retained.match("home/#")[0].payload == b"21.5"


def test_retained_message_to_an_existing_subscriber_carries_retain_0(broker):
    live = subscriber(broker, "home/#")
    broker.connected("sensor").send(Publish("home/temp", b"22", retain=True))
    assert live.received() == [Publish("home/temp", b"22")]  # [MQTT-3.3.1-9]


def test_retained_message_is_replaced_and_cleared_by_an_empty_payload(broker):
    publisher = broker.connected("sensor")
    publisher.send(Publish("home/temp", b"1", retain=True),
                   Publish("home/temp", b"2", retain=True))
    first = broker.connected("first")
    first.send(Subscribe(1, (("home/temp", SubOptions(0)),)))
    assert first.received() == [SubAck(1, (0,)), Publish("home/temp", b"2", retain=True)]
    publisher.send(Publish("home/temp", b"", retain=True))  # [MQTT-3.3.1-10]
    assert first.received() == [Publish("home/temp", b"")]  # subscribers still get it
    second = broker.connected("second")
    second.send(Subscribe(1, (("home/#", SubOptions(0)),)))
    assert second.received() == [SubAck(1, (0,))]  # [MQTT-3.3.1-11]
    assert broker.ctx.retained.match("#") == []


def test_retained_message_is_delivered_at_the_lower_of_both_qos(broker):
    broker.connected("sensor").send(Publish("q/2", b"x", 2, True, packet_id=5))
    client = broker.connected("reader")
    client.send(Subscribe(1, (("q/#", SubOptions(1)),)))
    ack, retained = client.received()
    assert ack == SubAck(1, (1,))
    assert (retained.qos, retained.retain, retained.dup) == (1, True, False)
    assert retained.packet_id == 1

"""Router without a socket: one delivery per client at the highest matching QoS, the QoS of
each delivery the lower of publish and grant, shared groups, and what never fans out.

Real connections of the in-process harness (tests/support/inprocess.py); assertions are on
what each client reads back.
"""

from __future__ import annotations

import pytest
from support.inprocess import InProcessBroker

from broker.codec import PubAck, Publish, PubRel, SubAck, SubOptions, Subscribe, Unsubscribe
from broker.core.message import Message


@pytest.fixture
def broker() -> InProcessBroker:
    return InProcessBroker()


def subscribed(broker, client_id: str, *filters: tuple[str, int]):
    client = broker.connected(client_id)
    client.send(Subscribe(1, tuple((f, SubOptions(qos)) for f, qos in filters)))
    assert client.received() == [SubAck(1, tuple(qos for _f, qos in filters))]
    return client


def qos_of(packets) -> list[tuple[str, int]]:
    return [(p.topic, p.qos) for p in packets]


def test_overlapping_subscriptions_deliver_one_copy_at_the_highest_qos(broker):
    sub = subscribed(broker, "sub", ("a/#", 0), ("a/+", 2), ("a/b", 1))
    broker.connected("pub").send(Publish("a/b", b"x", 2, packet_id=1), PubRel(1))
    assert qos_of(sub.received()) == [("a/b", 2)]
    assert broker.stats.publish_sent == 1


def test_overlapping_subscriptions_still_cap_at_the_publish_qos(broker):
    sub = subscribed(broker, "sub", ("a/#", 2), ("a/b", 1))
    broker.connected("pub").send(Publish("a/b", b"x", 1, packet_id=1))
    assert qos_of(sub.received()) == [("a/b", 1)]


def test_unsubscribing_one_of_two_overlapping_filters_keeps_the_other(broker):
    sub = subscribed(broker, "sub", ("a/#", 1), ("a/b", 2))
    sub.send(Unsubscribe(2, ("a/b",)))
    sub.received()
    broker.connected("pub").send(Publish("a/b", b"x", 2, packet_id=1), PubRel(1))
    assert qos_of(sub.received()) == [("a/b", 1)]


def test_each_subscriber_gets_its_own_copy_at_its_own_qos(broker):
    low = subscribed(broker, "low", ("t", 0))
    mid = subscribed(broker, "mid", ("#", 1))
    high = subscribed(broker, "high", ("+", 2))
    pub = broker.connected("pub")
    pub.send(Publish("t", b"m", 2, packet_id=9))
    assert qos_of(low.received()) == [("t", 0)]
    assert qos_of(mid.received()) == [("t", 1)]
    assert qos_of(high.received()) == [("t", 2)]
    assert broker.ctx.router.publish(Message("t", b"direct", 0, False)) == 3


def test_a_shared_group_delivers_each_message_to_one_member(broker):
    one = subscribed(broker, "one", ("$share/g/jobs/#", 1))
    two = subscribed(broker, "two", ("$share/g/jobs/#", 1))
    pub = broker.connected("pub")
    pub.send(*(Publish(f"jobs/{i}", b"j", 1, packet_id=i + 1) for i in range(4)))
    got = [p.topic for p in one.received()] + [p.topic for p in two.received()]
    assert sorted(got) == ["jobs/0", "jobs/1", "jobs/2", "jobs/3"]
    assert one.session.inflight and two.session.inflight  # both members had work


def test_no_delivery_to_a_publisher_that_is_not_subscribed(broker):
    pub = broker.connected("pub")
    pub.send(Publish("nobody/listens", b"x", 1, packet_id=3))
    assert pub.received() == [PubAck(3)]  # 3.1.1 cannot say "no subscribers"
    assert broker.stats.publish_sent == 0


def test_a_client_may_not_publish_into_sys(broker):
    watcher = subscribed(broker, "watcher", ("$SYS/#", 1))
    pub = broker.connected("pub")
    pub.send(Publish("$SYS/broker/uptime", b"forged", 1, packet_id=4))
    assert pub.received() == [PubAck(4)]  # acknowledged as usual, never forwarded
    assert watcher.received() == []


def test_a_subscriber_of_its_own_topic_gets_its_message(broker):
    echo = subscribed(broker, "echo", ("me", 1))
    echo.send(Publish("me", b"hi", 1, packet_id=5))
    # Fanned out before the acknowledgement is put behind it: the delivery goes first.
    assert echo.received() == [Publish("me", b"hi", 1, packet_id=1), PubAck(5)]

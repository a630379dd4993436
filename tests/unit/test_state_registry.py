"""SessionRegistry without a socket: session present, clean start, clean sessions that are
never resumed, expiry, and what a restart on the same store gives back.

Real connections of the in-process harness (tests/support/inprocess.py).
"""

from __future__ import annotations

import pytest
from support.inprocess import InProcessBroker

from broker.codec import PubAck, Publish, PubRec, PubRel, SubAck, SubOptions, Subscribe


@pytest.fixture
def broker() -> InProcessBroker:
    return InProcessBroker()


def subscribe(client, topic_filter: str = "t/#", qos: int = 1) -> None:
    client.send(Subscribe(1, ((topic_filter, SubOptions(qos)),)))
    assert client.received() == [SubAck(1, (qos,))]


def test_session_present_only_for_a_resumed_persistent_session(broker):
    assert not broker.connected("dev", clean=False).connack.session_present
    again = broker.connected("dev", clean=False)  # a takeover resumes it too
    assert again.connack.session_present
    again.lose()
    assert broker.connected("dev", clean=False).connack.session_present


def test_clean_start_discards_a_persistent_session_and_its_subscriptions(broker):
    old = broker.connected("dev", clean=False)
    subscribe(old)
    old.lose()
    fresh = broker.connected("dev", clean=True)
    assert not fresh.connack.session_present
    broker.connected("pub").send(Publish("t/x", b"m", 1, packet_id=1))
    assert fresh.received() == []
    fresh.lose()
    assert broker.ctx.registry.get("dev") is None  # a clean session ends with its connection
    assert not broker.connected("dev", clean=False).connack.session_present


def test_a_clean_session_is_never_resumed(broker):
    clean = broker.connected("dev", clean=True)
    subscribe(clean)
    taken = broker.connected("dev", clean=False)  # takes over while the clean one is live
    assert not taken.connack.session_present  # [MQTT-3.1.2-6]
    broker.connected("pub").send(Publish("t/x", b"m", 1, packet_id=1))
    assert taken.received() == []


def test_expired_sessions_are_removed_and_counted(broker):
    registry = broker.ctx.registry
    broker.connected("gone", clean=False).lose()
    broker.connected("online", clean=False)
    disconnected_at = registry.get("gone").disconnected_at
    assert registry.expire(60, now=disconnected_at + 59) == []
    assert registry.expire(60, now=disconnected_at + 60) == ["gone"]
    assert registry.get("gone") is None and registry.get("online") is not None
    assert broker.stats.clients_expired == 1
    assert not broker.connected("gone", clean=False).connack.session_present


def test_restart_keeps_persistent_sessions_what_they_are_owed_and_retained(broker):
    sub = broker.connected("sub", clean=False)
    subscribe(sub, qos=2)
    pub = broker.connected("pub", clean=False)
    pub.send(Publish("t/1", b"one", 1, packet_id=1), Publish("t/2", b"two", 2, packet_id=2),
             Publish("r", b"kept", 0, True))
    assert pub.received() == [PubAck(1), PubRec(2)]  # PUBREL not sent yet
    assert [p.packet_id for p in sub.received()] == [1, 2]
    sub.send(PubRec(2))
    assert sub.received() == [PubRel(2)]
    broker.connected("clean", clean=True)

    again = broker.restarted()
    assert again.ctx.registry.get("clean") is None
    sub = again.connected("sub", clean=False)
    assert sub.connack.session_present
    assert [(type(p).__name__, p.packet_id, getattr(p, "dup", None)) for p in sub.pending] == \
        [("Publish", 1, True), ("PubRel", 2, None)]
    pub = again.connected("pub", clean=False)
    pub.send(Publish("t/2", b"two", 2, dup=True, packet_id=2))  # not forwarded again
    assert pub.received() == [PubRec(2)]
    assert sub.received() == []
    late = again.connected("late")
    late.send(Subscribe(1, (("r", SubOptions(0)),)))
    assert late.received() == [SubAck(1, (0,)), Publish("r", b"kept", retain=True)]

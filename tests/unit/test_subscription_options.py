"""MQTT 5 SUBSCRIBE without sockets: ClientProtocols on one BrokerContext, the deliveries the
router hands each session (`Session.deliver` is watched), and what shared groups do with the
messages of a member that leaves."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from support.recording_peer import RecordingPeer

from broker.codec import (
    Connect,
    PubAck,
    Publish,
    SubAck,
    SubOptions,
    Subscribe,
    UnsubAck,
    Unsubscribe,
)
from broker.config.loading import load_text
from broker.core.context import BrokerContext
from broker.core.message import Message
from broker.core.protocol import CLIENT_DISCONNECT, PEER_CLOSED, ClientProtocol, OpenAuthority
from broker.core.session import Delivery, Session, queued_entry
from broker.errors import ProtocolError, ReasonCode
from broker.store.memory import MemoryStore
from broker.store.records import OutgoingWithdrawn, Subscribed

Seen = tuple[str, bytes, int, bool, tuple[int, ...]]


@pytest.fixture
def deliveries(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Seen]]:
    """Every `Session.deliver` call: (client id, payload, QoS, retain, subscription ids)."""
    seen: list[Seen] = []
    original = Session.deliver

    def deliver(self: Session, message: Message, qos: int, retain: bool = False,
                sub_ids: tuple[int, ...] = ()) -> None:
        seen.append((self.client_id, message.payload, qos, retain, tuple(sub_ids)))
        original(self, message, qos, retain, sub_ids)

    monkeypatch.setattr(Session, "deliver", deliver)
    yield seen


def make_ctx(extra: str = "") -> BrokerContext:
    return BrokerContext.build(load_text("[persistence]\nenabled = false\n" + extra, "test"),
                               MemoryStore())


@pytest.fixture
def ctx() -> BrokerContext:
    return make_ctx()


def connect(ctx: BrokerContext, client_id: str, level: int = 5,
            expiry: int = 0) -> tuple[ClientProtocol, RecordingPeer]:
    peer = RecordingPeer(level)
    protocol = ClientProtocol(ctx, peer, "127.0.0.1:1")
    props = {"session_expiry_interval": expiry} if expiry else {}
    request = protocol.handle(Connect(client_id, level, True, 60,
                                      properties=props if level == 5 else {}))
    assert request is not None
    protocol.authenticated(OpenAuthority().authenticate(request))
    peer.items.clear()
    return protocol, peer


def subscribe(protocol: ClientProtocol, *subs: tuple[str, SubOptions],
              identifier: int = 0) -> tuple[int, ...]:
    props = {"subscription_identifier": [identifier]} if identifier else {}
    protocol.handle(Subscribe(1, subs, props))
    peer = protocol.peer
    assert isinstance(peer, RecordingPeer)
    [suback] = peer.take(SubAck)
    codes: tuple[int, ...] = suback.reason_codes
    return codes


_packet_ids = itertools.count(1)


def publish(protocol: ClientProtocol, topic: str, payload: bytes, qos: int = 0,
            retain: bool = False) -> None:
    packet_id = next(_packet_ids) % 65_535 + 1 if qos else 0  # never a duplicate QoS 2
    protocol.handle(Publish(topic, payload, qos, retain, packet_id=packet_id))


def test_no_local_skips_only_the_publishers_own_messages(ctx, deliveries):
    me, my_peer = connect(ctx, "me")
    other, _ = connect(ctx, "other")
    subscribe(me, ("chat/#", SubOptions(1, no_local=True)))
    publish(me, "chat/x", b"mine", 1)
    [ack] = my_peer.take(PubAck)
    assert ack.reason_code == ReasonCode.NO_MATCHING_SUBSCRIBERS  # nobody else listens
    publish(other, "chat/x", b"theirs", 1)
    assert deliveries == [("me", b"theirs", 1, False, ())]


def test_no_local_with_an_overlapping_subscription_delivers_by_that_one_alone(ctx, deliveries):
    me, _ = connect(ctx, "me")
    subscribe(me, ("t/#", SubOptions(2, no_local=True)), identifier=1)
    subscribe(me, ("t/+", SubOptions(1)), identifier=2)
    publish(me, "t/x", b"mine", 2)
    assert deliveries == [("me", b"mine", 1, False, (2,))]


def test_retain_as_published_keeps_the_flag_for_that_subscriber_only(ctx, deliveries):
    rap, _ = connect(ctx, "rap")
    v5, _ = connect(ctx, "v5")
    v3, _ = connect(ctx, "v3", level=4)
    pub, _ = connect(ctx, "pub")
    subscribe(rap, ("r/t", SubOptions(0, retain_as_published=True)))
    subscribe(v5, ("r/t", SubOptions(0)))
    subscribe(v3, ("r/t", SubOptions(0)))
    publish(pub, "r/t", b"kept", 0, retain=True)
    assert sorted(deliveries) == [("rap", b"kept", 0, True, ()), ("v3", b"kept", 0, False, ()),
                                  ("v5", b"kept", 0, False, ())]


def test_overlapping_subscriptions_pass_every_identifier_in_one_delivery(ctx, deliveries):
    sub, _ = connect(ctx, "sub")
    pub, _ = connect(ctx, "pub")
    subscribe(sub, ("s/+", SubOptions(0)), identifier=7)
    subscribe(sub, ("s/#", SubOptions(1)), identifier=300_000)
    subscribe(sub, ("s/x", SubOptions(0)))  # no identifier of its own
    publish(pub, "s/x", b"once", 1)
    assert deliveries == [("sub", b"once", 1, False, (7, 300_000))]


def test_retained_messages_on_subscribe_carry_the_new_subscriptions_identifier(ctx, deliveries):
    pub, _ = connect(ctx, "pub")
    publish(pub, "keep/a", b"r", 1, retain=True)
    sub, _ = connect(ctx, "sub")
    subscribe(sub, ("keep/#", SubOptions(1)), identifier=42)
    assert deliveries == [("sub", b"r", 1, True, (42,))]


@pytest.mark.parametrize(("handling", "first", "again"), [(0, 1, 1), (1, 1, 0), (2, 0, 0)])
def test_retain_handling_decides_when_retained_messages_are_sent(ctx, deliveries, handling,
                                                                 first, again):
    pub, _ = connect(ctx, "pub")
    publish(pub, "rh/t", b"r", 0, retain=True)
    sub, _ = connect(ctx, "sub")
    subscribe(sub, ("rh/t", SubOptions(0, retain_handling=handling)))
    assert len(deliveries) == first
    subscribe(sub, ("rh/t", SubOptions(0, retain_handling=handling)))  # it exists now
    assert len(deliveries) == first + again


def test_subscription_identifier_zero_or_twice_is_a_protocol_error(ctx):
    sub, _ = connect(ctx, "sub")
    with pytest.raises(ProtocolError, match="identifier 0"):
        sub.handle(Subscribe(1, (("a", SubOptions(0)),), {"subscription_identifier": [0]}))
    with pytest.raises(ProtocolError, match="more than one"):
        sub.handle(Subscribe(2, (("a", SubOptions(0)),), {"subscription_identifier": [1, 2]}))


def test_no_local_on_a_shared_subscription_is_a_protocol_error(ctx):  # [MQTT-3.8.3-4]
    sub, peer = connect(ctx, "sub")
    with pytest.raises(ProtocolError, match="no local on the shared subscription"):
        subscribe(sub, ("a", SubOptions(0)), ("$share/g/a", SubOptions(0, no_local=True)))
    assert ctx.tree.count == 0 and peer.items == []  # nothing of that SUBSCRIBE took effect


def test_suback_codes_per_filter_and_3_1_1_unchanged(ctx):
    v5, _ = connect(ctx, "v5")
    assert subscribe(v5, ("ok", SubOptions(2)), ("bad/#/x", SubOptions(1)),
                     ("$share/g/t", SubOptions(1))) == (2, ReasonCode.TOPIC_FILTER_INVALID, 1)
    v3, _ = connect(ctx, "v3", level=4)
    assert subscribe(v3, ("a/+", SubOptions(1)), ("$share/g/#", SubOptions(2))) == (1, 2)


def test_the_journal_keeps_the_identifier_and_options_and_restore_brings_them_back():
    store = MemoryStore()
    config = load_text("[persistence]\nenabled = false\n", "test")
    ctx = BrokerContext.build(config, store)
    sub, _ = connect(ctx, "sub", expiry=300)
    subscribe(sub, ("j/+", SubOptions(1, no_local=True, retain_as_published=True)), identifier=5)
    assert Subscribed("sub", "j/+", 0x0d, 5) in store.records()
    again = BrokerContext.build(config, store)
    again.registry.restore(store.load(), again.retained)
    [(client, qos, options)] = again.tree.match("j/x")
    assert (client, qos) == ("sub", 1) and options is not None
    assert options.identifiers == (5,) and options.retain_as_published
    assert options.no_local and options.own is None
    assert again.registry.sessions["sub"].subscription_ids == {"j/+": 5}


# Shared groups: online members first, and a leaving member's messages go to another.

def test_shared_group_passes_an_offline_member_by(ctx, deliveries):
    away, _ = connect(ctx, "away", expiry=300)
    here, _ = connect(ctx, "here")
    for member in (away, here):
        subscribe(member, ("$share/g/job", SubOptions(1)))
    away.connection_lost(PEER_CLOSED)  # persistent: it stays in the group, offline
    pub, _ = connect(ctx, "pub")
    for n in range(4):
        publish(pub, "job", b"%d" % n, 1)
    assert [d[0] for d in deliveries] == ["here"] * 4


def test_a_member_whose_session_ends_hands_its_unacknowledged_qos1_to_another(deliveries):
    ctx = make_ctx("[limits]\nmax_inflight_messages = 2\n")
    leaving, leaving_peer = connect(ctx, "leaving")
    staying, _ = connect(ctx, "staying")
    subscribe(leaving, ("$share/g/q/#", SubOptions(1)))
    subscribe(staying, ("$share/g/q/#", SubOptions(1)), identifier=3)
    pub, _ = connect(ctx, "pub")
    for n in range(8):
        publish(pub, "q/x", b"%d" % n, 1)
    held = [d.message.payload for d in leaving_peer.take(Delivery)]
    assert len(held) == 2 and len(ctx.registry.sessions["leaving"].queue) == 2
    deliveries.clear()
    leaving.connection_lost(PEER_CLOSED)  # expiry 0: the session ends
    # Round-robin gave it every other message: its two in flight and its two queued go, in
    # order, to the other member, with that member's identifier.
    assert held == [b"1", b"3"]
    assert deliveries == [("staying", payload, 1, False, (3,))
                          for payload in (b"1", b"3", b"5", b"7")]


def test_a_qos2_message_in_flight_never_goes_to_another_member(deliveries):  # [MQTT-4.8.2-5]
    ctx = make_ctx()
    leaving, leaving_peer = connect(ctx, "leaving")
    staying, _ = connect(ctx, "staying")
    for member in (leaving, staying):
        subscribe(member, ("$share/g/q2", SubOptions(2)))
    pub, _ = connect(ctx, "pub")
    for n in range(2):
        publish(pub, "q2", b"%d" % n, 2)
    assert len(leaving_peer.take(Delivery)) == 1
    deliveries.clear()
    leaving.connection_lost(PEER_CLOSED)
    assert deliveries == []


def test_a_member_that_unsubscribes_hands_over_its_queue_and_completes_its_flight(deliveries):
    ctx = make_ctx("[limits]\nmax_inflight_messages = 1\n")
    leaving, leaving_peer = connect(ctx, "leaving", expiry=300)
    staying, _ = connect(ctx, "staying")
    for member in (leaving, staying):
        subscribe(member, ("$share/g/u", SubOptions(1)))
    pub, _ = connect(ctx, "pub")
    for n in range(6):
        publish(pub, "u", b"%d" % n, 1)
    [in_flight] = leaving_peer.take(Delivery)
    queued = [queued_entry(entry)[0].payload for entry in ctx.registry.sessions["leaving"].queue]
    assert len(queued) == 2
    deliveries.clear()
    leaving.handle(Unsubscribe(2, ("$share/g/u",)))
    assert [d[1] for d in deliveries] == queued
    assert {d[0] for d in deliveries} == {"staying"}
    assert [a.reason_codes for a in leaving_peer.take(UnsubAck)] == [(ReasonCode.SUCCESS,)]
    assert not ctx.registry.sessions["leaving"].queue
    assert ctx.registry.sessions["leaving"].inflight == {in_flight.packet_id: in_flight}
    # Its session is persistent: the journal says those two are no longer owed to it.
    withdrawn = [r for r in ctx.store.records() if isinstance(r, OutgoingWithdrawn)]
    assert [r.client_id for r in withdrawn] == ["leaving", "leaving"]
    assert not ctx.store.load().sessions["leaving"].outgoing.keys() - {0}


def test_a_member_that_also_subscribes_plainly_keeps_what_it_may_have_had_by_that(deliveries):
    ctx = make_ctx("[limits]\nmax_inflight_messages = 1\n")
    leaving, _ = connect(ctx, "leaving")
    staying, _ = connect(ctx, "staying")
    subscribe(leaving, ("$share/g/o/#", SubOptions(1)), ("o/plain", SubOptions(1)))
    subscribe(staying, ("$share/g/o/#", SubOptions(1)))
    pub, _ = connect(ctx, "pub")
    for topic in ("o/plain", "o/plain", "o/other", "o/other", "o/other"):
        publish(pub, topic, topic.encode(), 1)
    # It holds both o/plain (one by its own subscription alone, one the group's as well)
    # and one o/other: only that one was surely the group's.
    assert sorted(entry.message.payload for entry in
                  [*ctx.registry.sessions["leaving"].inflight.values()]) == [b"o/plain"]
    assert sorted(queued_entry(entry)[0].payload
                  for entry in ctx.registry.sessions["leaving"].queue) == \
        [b"o/other", b"o/plain"]
    deliveries.clear()
    leaving.connection_lost(CLIENT_DISCONNECT)
    assert deliveries == [("staying", b"o/other", 1, False, ())]

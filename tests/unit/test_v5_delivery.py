"""What an MQTT 5 subscriber receives, in process: subscription identifiers, the remaining
message expiry, outbound topic aliases, the client's maximum packet size and receive maximum,
the payload format check on the way in, and mixed 3.1.1/5 fleets. Clients are real
`Connection`s whose transport keeps what the broker wrote, read back by a client decoder."""

from __future__ import annotations

import time
from typing import Any

import pytest

from broker.codec import (
    ConnAck,
    Connect,
    FrameDecoder,
    PubAck,
    Publish,
    PubRec,
    SubAck,
    SubOptions,
    Subscribe,
    encode,
)
from broker.config.loading import load_text
from broker.core import delivery as delivery_module
from broker.core import message as message_module
from broker.core import session as session_module
from broker.core.context import BrokerContext
from broker.core.message import Message
from broker.core.protocol import PEER_CLOSED, OpenAuthority
from broker.core.session import queued_entry
from broker.errors import ReasonCode
from broker.link.connection import Connection
from broker.store.base import restore
from broker.store.memory import MemoryStore
from broker.store.record_codec import CorruptRecord, decode_record, encode_record
from broker.store.records import MessageQueued, MessageStored, OutgoingStored, SessionOpened

V5 = 5
EXPIRY = "message_expiry_interval"


class ManualFlush:
    """The hub's end-of-iteration flush, done by the test (`Client.received`)."""

    def add(self, outbox: object) -> None:
        pass


class Wire:
    """A transport that feeds what the broker writes to a client-side decoder."""

    address = "127.0.0.1:1"
    unsent = False
    unbuffered = False

    def __init__(self, level: int) -> None:
        self.decoder = FrameDecoder(server_side=False, protocol_level=level)
        self.sizes: list[int] = []

    def try_send(self, data: bytes) -> bool:
        self.sendall(data)
        return True

    def sendall(self, data: bytes) -> None:
        self.sizes.append(len(data))
        self.decoder.feed(data)

    def recv(self) -> bytes:
        raise OSError("not used")

    def fileno(self) -> int:
        return -1

    def close(self, reason_code: int = 0) -> None:
        pass


class Client:
    """One connection to the in-process broker, packets in and out through its codec."""

    def __init__(self, ctx: BrokerContext, client_id: str, level: int = V5, clean: bool = True,
                 **properties: Any) -> None:
        self.level = level
        self.wire = Wire(level)
        self.conn = Connection(ctx, self.wire, flusher=ManualFlush())  # type: ignore[arg-type]
        self.backlog: list[Any] = []
        self.send(Connect(client_id, level, clean, 0, properties=properties if level >= V5
                          else {}))
        connack, *self.backlog = self.received()
        assert isinstance(connack, ConnAck) and connack.reason_code == 0

    def send(self, packet: Any) -> None:
        decoder = self.conn.decoder
        decoder.feed(encode(packet, self.level))
        while (incoming := decoder.next_packet()) is not None:
            protocol = self.conn.protocol
            request = protocol.handle(incoming)
            if request is not None:
                protocol.authenticated(OpenAuthority().authenticate(request))

    def received(self) -> list[Any]:
        """Every packet the broker wrote since the last call."""
        self.conn.outbox.flush()
        out, self.backlog = self.backlog, []
        while (packet := self.wire.decoder.next_packet()) is not None:
            out.append(packet)
        return out

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        self.send(Subscribe(1, ((topic_filter, SubOptions(qos)),)))
        suback, *self.backlog = self.received()
        assert isinstance(suback, SubAck)

    def close(self) -> None:
        self.conn.protocol.connection_lost(PEER_CLOSED)


class Clock:
    """Stands in for the `time` module in core/session.py, message.py and delivery.py: a clock
    the test moves."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return time.monotonic()


def make_ctx(extra: str = "") -> BrokerContext:
    return BrokerContext.build(load_text(f"[persistence]\nenabled = false\n{extra}", "test"),
                               MemoryStore())


@pytest.fixture
def ctx() -> BrokerContext:
    return make_ctx()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(session_module, "time", clock)
    monkeypatch.setattr(message_module, "time", clock)
    monkeypatch.setattr(delivery_module, "time", clock)
    return clock


def publishes(packets: list[Any]) -> list[Publish]:
    return [p for p in packets if isinstance(p, Publish)]


def session_of(ctx: BrokerContext, client_id: str) -> session_module.Session:
    session = ctx.registry.get(client_id)
    assert session is not None
    return session


# -- subscription identifiers -------------------------------------------------------------------

@pytest.mark.parametrize("qos", [0, 1, 2])
def test_a_v5_delivery_carries_every_subscription_identifier(ctx, qos):
    sub = Client(ctx, "sub")
    session_of(ctx, "sub").deliver(Message("t/a", b"x", qos), qos, False, (7, 300_000))
    [publish] = publishes(sub.received())
    assert publish.properties["subscription_identifier"] == [7, 300_000]  # [MQTT-3.3.4-4]
    assert publish.payload == b"x" and publish.qos == qos


def test_a_v5_delivery_without_identifiers_carries_none(ctx):
    sub = Client(ctx, "sub")
    session_of(ctx, "sub").deliver(Message("t/a", b"x", 1), 1)
    [publish] = publishes(sub.received())
    assert "subscription_identifier" not in publish.properties


def test_a_v3_delivery_never_carries_identifiers(ctx):
    sub = Client(ctx, "sub", level=4)
    session_of(ctx, "sub").deliver(Message("t/a", b"x", 1), 1, False, (7,))
    [publish] = publishes(sub.received())
    assert encode(publish, 4) == encode(Publish("t/a", b"x", 1, packet_id=publish.packet_id), 4)


def test_a_resend_after_reconnect_carries_the_identifiers_again(ctx):
    Client(ctx, "sub", clean=False, session_expiry_interval=60).subscribe("t/#")
    session_of(ctx, "sub").deliver(Message("t/a", b"x", 1), 1, False, (9,))
    back = Client(ctx, "sub", clean=False, session_expiry_interval=60)
    [again] = publishes(back.received())
    assert again.dup and again.properties["subscription_identifier"] == [9]


def test_identifiers_of_a_queued_message_are_kept_in_the_store(ctx):
    sub = Client(ctx, "sub", clean=False, session_expiry_interval=60)
    sub.close()
    message = Message("t/a", b"x", 1)
    session_of(ctx, "sub").deliver(message, 1, False, (4, 5))
    state = restore(ctx.store.records())  # type: ignore[attr-defined]
    [owed] = state.sessions["sub"].outgoing.values()
    assert owed.sub_ids == (4, 5) and owed.packet_id == 0


# -- message expiry ------------------------------------------------------------------------------

def test_the_delivered_expiry_is_the_time_left(ctx):
    sub = Client(ctx, "sub")
    message = Message("t/a", b"x", 1, properties={EXPIRY: 60}, received_at=time.time() - 20.5)
    session_of(ctx, "sub").deliver(message, 1)
    [publish] = publishes(sub.received())
    assert publish.properties[EXPIRY] in (40, 39)  # [MQTT-3.3.2-6] 39.5 rounded up


def test_an_expired_message_is_not_delivered_at_any_qos(ctx):
    sub = Client(ctx, "sub", level=4)
    expired = Message("t/a", b"x", 1, properties={EXPIRY: 5}, received_at=time.time() - 6)
    for qos in (0, 1):
        assert not session_of(ctx, "sub").deliver(expired, qos, True)
    assert publishes(sub.received()) == []
    assert ctx.stats.publish_expired == 2


def test_a_retained_message_past_its_expiry_is_not_sent_on_subscribe(ctx, clock):
    pub = Client(ctx, "pub")
    pub.send(Publish("r/a", b"old", 1, retain=True, packet_id=1, properties={EXPIRY: 10}))
    clock.now += 5
    pub.send(Publish("r/b", b"new", 1, retain=True, packet_id=2, properties={EXPIRY: 10}))
    clock.now += 6
    sub = Client(ctx, "sub")
    sub.subscribe("r/+")
    [publish] = publishes(sub.received())
    assert (publish.payload, publish.retain, publish.properties[EXPIRY]) == (b"new", True, 4)


def test_a_queued_message_that_expires_waiting_is_dropped_when_its_turn_comes(ctx, clock):
    sub = Client(ctx, "sub", receive_maximum=1)
    session = session_of(ctx, "sub")
    session.deliver(Message("t/a", b"first", 1), 1)
    session.deliver(Message("t/a", b"mortal", 1, properties={EXPIRY: 10}, received_at=clock.now),
                    1)
    session.deliver(Message("t/a", b"last", 1), 1)
    [first] = publishes(sub.received())
    clock.now += 11
    sub.send(PubAck(first.packet_id))
    [after] = publishes(sub.received())
    assert after.payload == b"last"
    assert ctx.stats.publish_expired == 1 and session.owed() == 1


def test_an_in_flight_message_is_resent_after_reconnect_even_once_expired(ctx, clock):
    Client(ctx, "sub", clean=False, session_expiry_interval=60)
    session_of(ctx, "sub").deliver(
        Message("t/a", b"x", 1, properties={EXPIRY: 10}, received_at=clock.now), 1)
    clock.now += 30
    back = Client(ctx, "sub", clean=False, session_expiry_interval=60)
    [again] = publishes(back.received())
    assert again.dup and again.properties[EXPIRY] == 0


def test_a_queued_message_expired_while_the_broker_was_down_is_not_restored():
    now = time.time()
    records = [MessageQueued(1, "t/a", b"x", 1, False, "pub", {EXPIRY: 10}, "sub", 1, False, 0,
                             now - 11),
               MessageQueued(2, "t/a", b"y", 1, False, "pub", {EXPIRY: 10}, "sub", 1, False, 0,
                             now - 5)]
    store = MemoryStore()
    for record in [SessionOpened("sub", 5, 60), *records]:
        store.append(record)
    ctx = BrokerContext.build(load_text("", "test"), store)
    ctx.registry.restore(store.load(), ctx.retained)
    session = session_of(ctx, "sub")
    assert [queued_entry(e)[0].payload for e in session.queue] == [b"y"]
    assert 4 < queued_entry(session.queue[0])[0].expires_at - now <= 5  # counted from its arrival
    assert ctx.stats.publish_expired == 1


def test_a_held_wills_expiry_counts_from_its_publication(clock):
    from broker.core.held_wills import HeldWills

    wills = HeldWills()
    wills.hold("dev", Message("will/dev", b"gone", 1, properties={EXPIRY: 5}), due=1.0)
    clock.now += 30  # the will delay, longer than its expiry
    [will] = wills.due(2.0)
    assert will.expires_at == clock.now + 5  # 5.0 section 3.1.3.2.4


# -- topic aliases -------------------------------------------------------------------------------

def test_outbound_aliases_are_assigned_on_first_use_up_to_the_clients_maximum(ctx):
    sub = Client(ctx, "sub", topic_alias_maximum=2)
    session = session_of(ctx, "sub")
    for topic, qos in (("a", 0), ("a", 1), ("b", 2), ("c", 1), ("b", 0), ("c", 0)):
        session.deliver(Message(topic, topic.encode(), qos), qos)
    seen = [(p.topic, p.properties.get("topic_alias"), p.payload)
            for p in publishes(sub.received())]
    assert seen == [("a", 1, b"a"), ("", 1, b"a"), ("b", 2, b"b"), ("c", None, b"c"),
                    ("", 2, b"b"), ("c", None, b"c")]


def test_no_alias_without_a_topic_alias_maximum_and_a_reconnect_starts_afresh(ctx):
    plain = Client(ctx, "plain")
    session_of(ctx, "plain").deliver(Message("a", b"1"), 0)
    session_of(ctx, "plain").deliver(Message("a", b"2"), 0)
    assert [p.properties for p in publishes(plain.received())] == [{}, {}]
    Client(ctx, "sub", topic_alias_maximum=1)
    session_of(ctx, "sub").deliver(Message("a", b"1"), 0)
    again = Client(ctx, "sub", topic_alias_maximum=1)  # [MQTT-3.3.2-7]
    session_of(ctx, "sub").deliver(Message("a", b"2"), 0)
    [publish] = publishes(again.received())
    assert (publish.topic, publish.properties["topic_alias"]) == ("a", 1)


# -- maximum packet size -------------------------------------------------------------------------

def test_a_delivery_above_the_clients_maximum_packet_size_is_dropped_and_counted(ctx):
    sub = Client(ctx, "sub", maximum_packet_size=64, receive_maximum=1)
    session = session_of(ctx, "sub")
    for qos in (0, 1, 2):
        assert not session.deliver(Message("t/a", b"x" * 64, qos), qos)
    session.deliver(Message("t/a", b"small", 1), 1)  # the window was not taken by the drops
    [publish] = publishes(sub.received())
    assert publish.payload == b"small"
    assert max(sub.wire.sizes) <= 64
    assert ctx.stats.publish_dropped == 3 and session.owed() == 1


def test_a_packet_exactly_the_maximum_goes_and_one_byte_more_does_not(ctx):
    size = len(encode(Publish("t/a", b"x" * 10, 1, packet_id=1), V5))
    sub = Client(ctx, "sub", maximum_packet_size=size)
    session = session_of(ctx, "sub")
    session.deliver(Message("t/a", b"x" * 10, 1), 1)
    session.deliver(Message("t/a", b"x" * 11, 1), 1)
    assert [p.payload for p in publishes(sub.received())] == [b"x" * 10]


def test_an_alias_is_not_taken_by_a_delivery_that_was_too_large(ctx):
    sub = Client(ctx, "sub", maximum_packet_size=40, topic_alias_maximum=5)
    session = session_of(ctx, "sub")
    session.deliver(Message("t/a", b"x" * 40), 0)
    session.deliver(Message("t/a", b"ok"), 0)
    [publish] = publishes(sub.received())
    assert (publish.topic, publish.properties["topic_alias"]) == ("t/a", 1)


def test_a_queued_message_too_large_for_the_new_connection_is_done_with(ctx):
    first = Client(ctx, "sub", clean=False, session_expiry_interval=60)
    first.close()
    session = session_of(ctx, "sub")
    session.deliver(Message("t/a", b"x" * 100, 1), 1)
    session.deliver(Message("t/a", b"fits", 1), 1)
    back = Client(ctx, "sub", clean=False, session_expiry_interval=60, maximum_packet_size=50)
    assert [p.payload for p in publishes(back.received())] == [b"fits"]
    assert ctx.stats.publish_dropped == 1 and session.owed() == 1


# -- receive maximum -----------------------------------------------------------------------------

def test_receive_maximum_one_holds_the_second_qos1_until_the_first_is_acked(ctx):
    sub = Client(ctx, "sub", receive_maximum=1)
    session = session_of(ctx, "sub")
    session.deliver(Message("t/a", b"1", 1), 1)
    session.deliver(Message("t/a", b"2", 2), 2)
    [first] = publishes(sub.received())
    assert first.payload == b"1"
    sub.send(PubAck(first.packet_id))
    [second] = publishes(sub.received())
    assert second.payload == b"2"


def test_the_window_is_max_inflight_when_the_receive_maximum_is_larger():
    ctx = make_ctx("[limits]\nmax_inflight_messages = 2\n")
    sub = Client(ctx, "sub", receive_maximum=100)
    for n in range(5):
        session_of(ctx, "sub").deliver(Message("t/a", bytes([n]), 1), 1)
    assert len(publishes(sub.received())) == 2


def test_a_reconnect_with_a_smaller_receive_maximum_resends_only_what_fits(ctx):
    Client(ctx, "sub", clean=False, session_expiry_interval=60, receive_maximum=3)
    for n in range(3):
        session_of(ctx, "sub").deliver(Message("t/a", str(n).encode(), 1), 1)
    back = Client(ctx, "sub", clean=False, session_expiry_interval=60, receive_maximum=1)
    session_of(ctx, "sub").deliver(Message("t/a", b"new", 1), 1)
    got = []
    for _ in range(4):
        [publish] = publishes(back.received())
        got.append((publish.payload, publish.dup))
        back.send(PubAck(publish.packet_id))
    assert got == [(b"0", True), (b"1", True), (b"2", True), (b"new", False)]


# -- inbound payload format ----------------------------------------------------------------------

@pytest.mark.parametrize("qos, ack", [(1, PubAck), (2, PubRec)])
def test_a_payload_that_is_not_the_utf8_it_claims_gets_0x99_and_goes_nowhere(ctx, qos, ack):
    sub = Client(ctx, "sub")
    sub.subscribe("t/#", 2)
    pub = Client(ctx, "pub")
    pub.send(Publish("t/a", b"\xc3\x28", qos, retain=True, packet_id=5,
                     properties={"payload_format_indicator": 1}))
    [reply] = pub.received()
    assert isinstance(reply, ack) and reply.reason_code == ReasonCode.PAYLOAD_FORMAT_INVALID
    assert publishes(sub.received()) == [] and ctx.retained.get("t/a") is None


def test_a_qos0_payload_that_is_not_utf8_is_dropped_and_valid_utf8_passes(ctx):
    sub = Client(ctx, "sub")
    sub.subscribe("t/#", 0)
    pub = Client(ctx, "pub")
    flagged = {"payload_format_indicator": 1}
    pub.send(Publish("t/a", b"\xed\xa0\x80", properties=flagged))  # a surrogate: not UTF-8
    pub.send(Publish("t/a", "grüße".encode(), properties=flagged))
    [publish] = publishes(sub.received())
    assert publish.payload == "grüße".encode()
    assert publish.properties["payload_format_indicator"] == 1
    assert ctx.stats.publish_dropped == 1


# -- mixed fleets --------------------------------------------------------------------------------

def test_a_v3_subscriber_gets_a_v5_publish_without_its_properties(ctx):
    v3 = Client(ctx, "v3", level=4)
    v3.subscribe("t/#", 1)
    v5 = Client(ctx, "v5")
    v5.subscribe("t/#", 1)
    props = {"user_property": [("k", "v")], EXPIRY: 60, "content_type": "text/plain"}
    Client(ctx, "pub").send(Publish("t/a", b"x", 1, packet_id=1, properties=props))
    [old] = publishes(v3.received())
    assert encode(old, 4) == encode(Publish("t/a", b"x", 1, packet_id=old.packet_id), 4)
    [new] = publishes(v5.received())
    assert new.properties["user_property"] == [("k", "v")] and new.properties[EXPIRY] == 60


def test_a_v5_subscriber_gets_a_v3_publish_with_no_properties(ctx):
    sub = Client(ctx, "sub")
    sub.subscribe("t/#", 1)
    Client(ctx, "pub", level=4).send(Publish("t/a", b"x", 1, packet_id=1))
    Client(ctx, "pub0", level=4).send(Publish("t/a", b"y"))
    assert [(p.payload, dict(p.properties)) for p in publishes(sub.received())] == \
        [(b"x", {}), (b"y", {})]


def test_v3_and_v5_subscribers_of_one_message_share_its_layouts(ctx):
    message = Message("t/a", b"x", 1, properties={"content_type": "a"})
    first = message.wire(1, False, False, 1, 5)
    assert message.wire(1, False, False, 2, 4) != first
    forms = message._forms
    assert forms is not None and forms.layout_v5 is not None and forms.layout is not None
    layout5 = forms.layout_v5
    message.wire(1, False, False, 3, 4)
    assert message._forms.layout_v5 is layout5  # not laid out again after a 3.1.1 delivery


# -- the journal ---------------------------------------------------------------------------------

def test_records_without_the_v5_facts_keep_their_old_bytes():
    assert encode_record(OutgoingStored("c", 5, 1, False, 9))[0] == 7
    assert encode_record(MessageStored(1, "t", b"p", 1, False))[0] == 6


@pytest.mark.parametrize("record", [
    MessageStored(1, "t", b"p", 1, False, "o", {EXPIRY: 9}, 1764100000.5),
    MessageQueued(2, "t", b"p", 1, False, "o", {EXPIRY: 9}, "c", 1, False, 0, 1764100000.5),
    MessageQueued(3, "t", b"p", 1, False, "o", {}, "c", 1, False, 4, 0.0, (1, 268_435_455)),
    OutgoingStored("c", 5, 1, False, 9, (12,)),
], ids=lambda r: type(r).__name__)
def test_records_with_an_arrival_time_or_identifiers_round_trip(record):
    from broker.store.record_codec import _encode_generic

    body = encode_record(record)
    assert body == _encode_generic(record)
    assert decode_record(body) == record
    for cut in range(len(body)):
        with pytest.raises(CorruptRecord):
            decode_record(body[:cut])

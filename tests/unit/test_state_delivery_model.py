"""Random QoS 1/2 traffic between a publisher and a persistent subscriber, against a model of
what must be delivered and how often.

Hypothesis drives PUBLISH (QoS 1 and 2), the acknowledgements of both clients (PUBACK,
PUBREC, PUBREL, PUBCOMP, each sent whenever the strategy chooses), and disconnects and
reconnects of either client, over real connections of the in-process harness. Both clients
behave as the spec asks of a client: the publisher resends what is unacknowledged after it
reconnects (PUBLISH with DUP, or PUBREL once PUBREC came); the subscriber hands a QoS 2
message to its application on the first PUBLISH of a packet id and keeps the id until PUBREL.
Acknowledgements not yet written when a connection drops are lost with it.

The model, checked on every step and after everything is drained at the end:
- QoS 1 is delivered at least once; QoS 2 exactly once to the subscriber's application.
- First deliveries come in the order of publishing (one topic, one publisher).
- A PUBLISH the subscriber saw and had not acknowledged comes again, after a reconnect, with
  DUP 1, the same packet id and the same payload [MQTT-4.4.0-1]; a PUBLISH with DUP 0 never
  reuses a packet id still awaiting the subscriber's acknowledgement.
- Nothing is dropped (the queue limit is far away).
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from support.inprocess import NO_PERSISTENCE, InProcessBroker

from broker.codec import (
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    SubOptions,
    Subscribe,
)

TOPIC = "model/stream"


class PublisherClient:
    """The publisher's side of its session: what it published and has not seen finished."""

    def __init__(self) -> None:
        self.next_id = 1
        self.sent = 0  # messages published so far (the payload is the message's number)
        self.unacked: dict[int, tuple[int, int, bool]] = {}  # id -> (number, qos, got PUBREC)


class SubscriberClient:
    """The subscriber's side of its session and what its application was handed."""

    def __init__(self) -> None:
        self.awaiting_release: set[int] = set()  # QoS 2 ids handed over, PUBREL not yet seen
        self.unacked: dict[int, bytes] = {}  # PUBLISH read, its PUBACK/PUBREC not yet written
        self.acks: list = []  # acknowledgements to write (lost if the connection drops)
        self.app: list[tuple[int, int]] = []  # (message number, qos), as handed over


class DeliveryModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.broker = InProcessBroker(NO_PERSISTENCE + "[limits]\nmax_inflight_messages = 3\n")
        self.pubc = PublisherClient()
        self.subc = SubscriberClient()
        self.published: dict[int, int] = {}  # message number -> qos
        self.pub = self.broker.connected("pub", clean=False)
        self.sub = self.broker.connected("sub", clean=False)
        self.sub.send(Subscribe(1, ((TOPIC, SubOptions(2)),)))
        assert self.sub.received() == [SubAck(1, (2,))]
        self.sub_online = True

    # -- the publisher -------------------------------------------------------------------------

    @rule(qos=st.sampled_from([1, 2]))
    def publish(self, qos: int) -> None:
        pubc = self.pubc
        number = pubc.sent
        pubc.sent += 1
        packet_id = pubc.next_id
        pubc.next_id = packet_id % 65_535 + 1
        pubc.unacked[packet_id] = (number, qos, False)
        self.published[number] = qos
        self.pub.send(Publish(TOPIC, str(number).encode(), qos, packet_id=packet_id))

    @rule()
    def publisher_reads(self) -> None:
        unacked = self.pubc.unacked
        replies = []
        for packet in self.pub.received():
            number, qos, released = unacked[packet.packet_id]
            if isinstance(packet, PubAck):
                assert qos == 1 and not released
                del unacked[packet.packet_id]
            elif isinstance(packet, PubRec):
                assert qos == 2
                unacked[packet.packet_id] = (number, qos, True)
                replies.append(PubRel(packet.packet_id))
            else:
                assert isinstance(packet, PubComp) and qos == 2 and released, packet
                del unacked[packet.packet_id]
        if replies:
            self.pub.send(*replies)

    @rule()
    def publisher_reconnects(self) -> None:
        self.pub.lose()
        self.pub = self.broker.connected("pub", clean=False)
        assert self.pub.connack.session_present
        resends = []
        for packet_id, (number, qos, released) in self.pubc.unacked.items():
            if released:
                resends.append(PubRel(packet_id))
            else:
                resends.append(Publish(TOPIC, str(number).encode(), qos, dup=True,
                                       packet_id=packet_id))
        if resends:
            self.pub.send(*resends)

    # -- the subscriber ------------------------------------------------------------------------

    @precondition(lambda self: self.sub_online)
    @rule()
    def subscriber_reads(self) -> None:
        self._take(self.sub.received())

    def _take(self, packets: list) -> None:
        subc = self.subc
        for packet in packets:
            if isinstance(packet, PubRel):
                subc.awaiting_release.discard(packet.packet_id)
                subc.acks.append(PubComp(packet.packet_id))
                continue
            assert isinstance(packet, Publish), packet
            packet_id = packet.packet_id
            seen = subc.unacked.get(packet_id)
            if seen is not None:  # sent before, never acknowledged: a resend
                assert packet.dup and packet.payload == seen, (packet, seen)  # [MQTT-4.4.0-1]
            subc.unacked[packet_id] = packet.payload
            number = int(packet.payload)
            assert packet.qos == self.published[number]
            if packet.qos == 1:
                subc.app.append((number, 1))
                subc.acks.append(PubAck(packet_id))
            else:
                if packet_id not in subc.awaiting_release:
                    subc.awaiting_release.add(packet_id)
                    subc.app.append((number, 2))
                subc.acks.append(PubRec(packet_id))

    @precondition(lambda self: self.sub_online and self.subc.acks)
    @rule(data=st.data())
    def subscriber_acknowledges(self, data: st.DataObject) -> None:
        subc = self.subc
        count = data.draw(st.integers(1, len(subc.acks)), label="acks written")
        written, subc.acks = subc.acks[:count], subc.acks[count:]
        for ack in written:
            if isinstance(ack, (PubAck, PubRec)):
                subc.unacked.pop(ack.packet_id, None)
        self.sub.send(*written)

    @precondition(lambda self: self.sub_online)
    @rule()
    def subscriber_goes_offline(self) -> None:
        self.sub.lose()
        self.subc.acks.clear()  # never written: lost with the connection
        self.sub_online = False

    @precondition(lambda self: not self.sub_online)
    @rule()
    def subscriber_comes_back(self) -> None:
        self.sub = self.broker.connected("sub", clean=False)
        assert self.sub.connack.session_present
        self.sub_online = True
        self._take(self.sub.pending)

    # -- the model -----------------------------------------------------------------------------

    @invariant()
    def qos2_is_never_handed_over_twice(self) -> None:
        numbers = [number for number, qos in self.subc.app if qos == 2]
        assert len(numbers) == len(set(numbers))

    @invariant()
    def first_deliveries_come_in_publishing_order(self) -> None:
        firsts: list[int] = []
        for number, _qos in self.subc.app:
            if number not in firsts:
                firsts.append(number)
        assert firsts == sorted(firsts)

    @invariant()
    def nothing_is_dropped(self) -> None:
        assert self.broker.stats.publish_dropped == 0

    def teardown(self) -> None:
        """Both clients online and keeping up until nothing moves: then everything published
        must have arrived, QoS 1 at least once and QoS 2 exactly once."""
        if not self.sub_online:
            self.subscriber_comes_back()
        for _ in range(10_000):  # each round moves the window on: a bound, never reached
            self.publisher_reads()
            self.subscriber_reads()
            if not self.subc.acks and not self.pubc.unacked:
                break
            if self.subc.acks:
                self.sub.send(*self.subc.acks)
                self.subc.acks = []
                self.subc.unacked.clear()
        assert self.pubc.unacked == {}
        assert self.broker.ctx.registry.get("sub").owed() == 0
        counts: dict[int, int] = {}
        for number, _qos in self.subc.app:
            counts[number] = counts.get(number, 0) + 1
        for number, qos in self.published.items():
            if qos == 1:
                assert counts.get(number, 0) >= 1, f"QoS 1 message {number} never arrived"
            else:
                assert counts.get(number, 0) == 1, f"QoS 2 message {number}: {counts.get(number)}"


DeliveryModel.TestCase.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_delivery_model = DeliveryModel.TestCase

"""MQTT 5 SUBSCRIBE over real sockets, in raw v5 bytes from the test's own codec: subscription
options (no local, retain as published, retain handling), subscription identifiers, SUBACK
codes, shared subscriptions that hand a leaving member's messages on, and a 3.1.1 subscriber
beside all of it that sees exactly what it saw before.

"Nothing more arrived" is never a sleep: a PINGREQ sent after the packet that would have
caused a delivery is answered after that delivery, so a PINGRESP first proves there was none."""

from __future__ import annotations

from typing import Any

from support.clients import RawClient, receive_all, unique

from broker.codec import (
    Connect,
    Disconnect,
    PingReq,
    PingResp,
    PubAck,
    Publish,
    PubRec,
    SubAck,
    SubOptions,
    Subscribe,
    UnsubAck,
    Unsubscribe,
    encode,
)
from broker.errors import ReasonCode

V5 = 5


def v5(port: int, client_id: str | None = None, clean: bool = True,
       **properties: Any) -> RawClient:
    raw = RawClient(port, protocol_level=V5)
    raw.send_packet(Connect(client_id or unique("v5"), V5, clean, 60, properties=properties), V5)
    connack = raw.recv_packet()
    assert connack.reason_code == ReasonCode.SUCCESS
    return raw


def subscribe(raw: RawClient, *subs: tuple[str, SubOptions], identifier: int = 0,
              level: int = V5) -> tuple[int, ...]:
    props = {"subscription_identifier": [identifier]} if identifier else {}
    raw.send_packet(Subscribe(1, subs, props if level == V5 else {}), level)
    suback = raw.recv_packet()
    assert isinstance(suback, SubAck)
    codes: tuple[int, ...] = suback.reason_codes
    return codes


def publish_acked(raw: RawClient, topic: str, payload: bytes, packet_id: int = 1,
                  retain: bool = False) -> PubAck:
    raw.send_packet(Publish(topic, payload, 1, retain, packet_id=packet_id), V5)
    ack = raw.recv_packet()
    assert isinstance(ack, PubAck)
    return ack


def nothing_more(raw: RawClient, level: int = V5) -> None:
    """No packet is waiting for `raw` (see the module's docstring)."""
    raw.send_packet(PingReq(), level)
    assert isinstance(raw.recv_packet(), PingResp)


def test_v5_no_local_does_not_send_a_client_its_own_messages(broker):
    topic = f"v5/nolocal/{unique()}"
    me = v5(broker.port)
    assert subscribe(me, (topic, SubOptions(1, no_local=True))) == (1,)
    # Its own message: nobody else subscribes, so the PUBACK even says no one got it.
    assert publish_acked(me, topic, b"mine").reason_code == ReasonCode.NO_MATCHING_SUBSCRIBERS
    other = v5(broker.port)
    publish_acked(other, topic, b"theirs")
    message = me.recv_packet()
    assert isinstance(message, Publish) and message.payload == b"theirs"
    me.send_packet(PubAck(message.packet_id), V5)
    nothing_more(me)
    for raw in (me, other):
        raw.close()


def test_v5_retain_as_published_keeps_the_flag_only_for_that_subscription(broker):
    topic = f"v5/rap/{unique()}"
    rap, plain, v3 = v5(broker.port), v5(broker.port), RawClient(broker.port)
    subscribe(rap, (topic, SubOptions(0, retain_as_published=True)))
    subscribe(plain, (topic, SubOptions(0)))
    v3.connect()
    assert v3.subscribe(topic, 0) == SubAck(1, (0,))
    publisher = v5(broker.port)
    publisher.send_packet(Publish(topic, b"kept", retain=True), V5)
    assert rap.recv_packet().retain is True  # 5.0 section 3.8.3.1
    assert plain.recv_packet().retain is False  # [MQTT-3.3.1-9]
    assert v3.recv_packet().retain is False
    publisher.send_packet(Publish(topic, b"", retain=True), V5)  # clear it
    for raw in (rap, plain, v3, publisher):
        raw.close()


def test_v5_retain_handling_0_always_1_for_a_new_subscription_2_never(broker):
    topic = f"v5/rh/{unique()}"
    publisher = v5(broker.port)
    publish_acked(publisher, topic, b"retained", retain=True)
    got = {}
    for handling in (0, 1, 2):
        raw = v5(broker.port)
        counts = []
        for _ in range(2):  # the second SUBSCRIBE finds the subscription existing
            subscribe(raw, (topic, SubOptions(0, retain_handling=handling)))
            raw.send_packet(PingReq(), V5)
            count = 0
            while not isinstance(packet := raw.recv_packet(), PingResp):
                assert isinstance(packet, Publish) and packet.retain and \
                    packet.payload == b"retained"
                count += 1
            counts.append(count)
        got[handling] = counts
        raw.close()
    assert got == {0: [1, 1], 1: [1, 0], 2: [0, 0]}
    publisher.send_packet(Publish(topic, b"", retain=True), V5)
    publisher.close()


def test_v5_overlapping_subscriptions_with_identifiers_deliver_one_copy_at_the_highest_qos(
        broker):
    topic = f"v5/ids/{unique()}"
    raw = v5(broker.port)
    subscribe(raw, (f"{topic}/+", SubOptions(0)), identifier=1)
    subscribe(raw, (f"{topic}/#", SubOptions(1)), identifier=268_435_455)
    publisher = v5(broker.port)
    publish_acked(publisher, f"{topic}/x", b"once")
    message = raw.recv_packet()
    assert isinstance(message, Publish) and message.qos == 1 and message.payload == b"once"
    raw.send_packet(PubAck(message.packet_id), V5)
    nothing_more(raw)
    for client in (raw, publisher):
        client.close()


def test_v5_publish_carries_every_matching_subscription_identifier(broker):
    # The router hands each delivery its identifiers (tests/unit/test_subscription_options.py);
    # writing them into the PUBLISH is the outbound side's work: this fails until it is done.
    topic = f"v5/ids-wire/{unique()}"
    publisher = v5(broker.port)
    publish_acked(publisher, f"{topic}/kept", b"retained", retain=True)
    raw = v5(broker.port)
    subscribe(raw, (f"{topic}/+", SubOptions(0)), identifier=1)
    retained = raw.recv_packet()
    assert isinstance(retained, Publish) and retained.retain
    subscribe(raw, (f"{topic}/#", SubOptions(0)), identifier=268_435_455)
    assert isinstance(raw.recv_packet(), Publish)  # the retained one again, for this filter
    publish_acked(publisher, f"{topic}/x", b"live", packet_id=2)
    live = raw.recv_packet()
    assert isinstance(live, Publish) and live.payload == b"live"
    nothing_more(raw)
    assert retained.properties.get("subscription_identifier") == [1]
    assert sorted(live.properties.get("subscription_identifier", [])) == [1, 268_435_455]
    publisher.send_packet(Publish(f"{topic}/kept", b"", retain=True), V5)
    for client in (raw, publisher):
        client.close()


def test_v5_subscription_options_survive_a_restart(broker_factory):
    broker = broker_factory()
    client_id, topic = unique("v5-kept"), f"v5/kept/{unique()}"
    raw = v5(broker.port, client_id, session_expiry_interval=300)
    subscribe(raw, (topic, SubOptions(1, no_local=True, retain_as_published=True)),
              identifier=12)
    raw.send_packet(Disconnect(), V5)
    assert raw.closed_by_broker()
    broker.kill9()  # the journal, not a clean shutdown's flush, brings it back
    broker.start()
    back = RawClient(broker.port, protocol_level=V5)
    back.send_packet(Connect(client_id, V5, False, 60,
                             properties={"session_expiry_interval": 300}), V5)
    assert back.recv_packet().session_present
    # No local came back: its own message reaches nobody.
    assert publish_acked(back, topic, b"mine").reason_code == \
        ReasonCode.NO_MATCHING_SUBSCRIBERS
    other = v5(broker.port)
    publish_acked(other, topic, b"theirs", retain=True)
    message = back.recv_packet()
    assert message.payload == b"theirs" and message.retain is True  # retain as published
    for client in (back, other):
        client.close()


def test_v5_suback_grants_refuses_and_says_why_per_filter(broker_factory, tmp_path):
    acl = tmp_path / "acl"
    acl.write_text("topic read open/#\n")
    broker = broker_factory(f'[broker]\nacl_file = "{acl}"\nallow_anonymous = true\n')
    raw = v5(broker.port)
    codes = subscribe(raw, ("open/a", SubOptions(2)), ("closed/a", SubOptions(1)),
                      ("open/#/x", SubOptions(0)), ("$share/g+/open/a", SubOptions(0)),
                      ("open/+", SubOptions(1)))
    assert codes == (2, ReasonCode.NOT_AUTHORIZED, ReasonCode.TOPIC_FILTER_INVALID,
                     ReasonCode.TOPIC_FILTER_INVALID, 1)
    raw.close()
    v3 = RawClient(broker.port)
    v3.connect()
    assert subscribe(v3, ("open/a", SubOptions(2)), ("closed/a", SubOptions(1)),
                     level=4) == (2, 0x80)
    v3.close()


def test_v5_reveal_denials_false_answers_refusals_with_0x80(broker_factory, tmp_path):
    """A broker that does not tell which topics a rule protects: 0x80 where 0x87 would be."""
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite open/#\n")
    broker = broker_factory(f'[broker]\nacl_file = "{acl}"\nallow_anonymous = true\n'
                            'reveal_denials = false\n')
    raw = v5(broker.port)
    assert subscribe(raw, ("open/a", SubOptions(1)), ("closed/a", SubOptions(1))) == (1, 0x80)
    assert publish_acked(raw, "closed/a", b"x").reason_code == ReasonCode.UNSPECIFIED_ERROR
    raw.send_packet(Publish("closed/b", b"x", 2, packet_id=2), V5)
    rec = raw.recv_packet()
    assert isinstance(rec, PubRec) and rec.reason_code == ReasonCode.UNSPECIFIED_ERROR
    allowed = publish_acked(raw, "open/b", b"y", packet_id=3)
    assert allowed.reason_code == ReasonCode.NO_MATCHING_SUBSCRIBERS
    raw.close()


def test_v5_no_local_on_a_shared_subscription_is_a_protocol_error(broker):  # [MQTT-3.8.3-4]
    raw = v5(broker.port)
    raw.send_packet(Subscribe(1, ((f"$share/g/{unique()}", SubOptions(1, no_local=True)),)), V5)
    reply = raw.recv_packet()
    assert isinstance(reply, Disconnect) and reply.reason_code == ReasonCode.PROTOCOL_ERROR
    assert raw.closed_by_broker()


def test_v5_subscription_identifier_zero_is_a_protocol_error(broker):
    raw = v5(broker.port)
    raw.send_packet(Subscribe(1, (("v5/zero", SubOptions(0)),),
                              {"subscription_identifier": [0]}), V5)
    reply = raw.recv_packet()
    assert isinstance(reply, Disconnect) and reply.reason_code == ReasonCode.PROTOCOL_ERROR
    assert raw.closed_by_broker()


# Shared subscriptions

def _members(port: int, group_filter: str, n: int, **properties: Any) -> list[RawClient]:
    members = []
    for _ in range(n):
        raw = v5(port, **properties)
        assert subscribe(raw, (group_filter, SubOptions(1))) == (1,)
        members.append(raw)
    return members


def test_v5_shared_member_whose_session_ends_hands_its_unacknowledged_messages_on(broker):
    topic = f"v5/share/{unique()}"
    leaving, staying = _members(broker.port, f"$share/g/{topic}", 2)
    publisher = v5(broker.port)
    payloads = [b"m%d" % n for n in range(6)]
    for n, payload in enumerate(payloads, 1):
        publish_acked(publisher, topic, payload, packet_id=n)
    held = [leaving.recv_packet() for _ in range(3)]  # every other one, never acknowledged
    assert all(isinstance(p, Publish) for p in held)
    leaving.close()  # session expiry 0: its session ends with the connection
    got = receive_all(staying, len(payloads))
    assert sorted({p.payload for p in got}) == payloads
    assert len(got) == len(payloads)  # each once
    for raw in (staying, publisher):
        raw.close()


def test_v5_shared_member_that_unsubscribes_hands_on_its_queue_and_keeps_its_flight(
        broker_factory):
    broker = broker_factory("[limits]\nmax_inflight_messages = 1\n")
    topic = f"v5/share-unsub/{unique()}"
    leaving, staying = _members(broker.port, f"$share/g/{topic}", 2)
    publisher = v5(broker.port)
    payloads = [b"u%d" % n for n in range(6)]
    for n, payload in enumerate(payloads, 1):
        publish_acked(publisher, topic, payload, packet_id=n)
    first = leaving.recv_packet()  # its window is one message: two more wait in its queue
    assert isinstance(first, Publish)
    leaving.send_packet(Unsubscribe(2, (f"$share/g/{topic}",)), V5)
    assert leaving.recv_packet() == UnsubAck(2, (ReasonCode.SUCCESS,))
    leaving.send_packet(PubAck(first.packet_id), V5)  # what was in flight completes here
    nothing_more(leaving)  # and its queue went to the group
    got = receive_all(staying, len(payloads) - 1)
    assert sorted([first.payload, *(p.payload for p in got)]) == payloads
    for raw in (leaving, staying, publisher):
        raw.close()


def test_v5_shared_group_passes_an_offline_persistent_member_by(broker):
    topic = f"v5/share-away/{unique()}"
    away_id = unique("away")
    away = v5(broker.port, away_id, session_expiry_interval=300)
    subscribe(away, (f"$share/g/{topic}", SubOptions(1)))
    away.send_packet(Disconnect(), V5)
    assert away.closed_by_broker()
    [here] = _members(broker.port, f"$share/g/{topic}", 1)
    publisher = v5(broker.port)
    for n in range(4):
        publish_acked(publisher, topic, b"p%d" % n, packet_id=n + 1)
    assert len(receive_all(here, 4)) == 4
    back = RawClient(broker.port, protocol_level=V5)
    back.send_packet(Connect(away_id, V5, False, 60,
                             properties={"session_expiry_interval": 300}), V5)
    assert back.recv_packet().session_present
    nothing_more(back)  # nothing was queued for it while a member was online
    for raw in (here, publisher, back):
        raw.close()


def test_3_1_1_subscriber_beside_v5_options_gets_the_very_bytes_it_got_before(broker):
    topic = f"mixed/{unique()}"
    v3 = RawClient(broker.port)
    v3.connect()
    assert v3.subscribe(topic, 0) == SubAck(1, (0,))
    options = v5(broker.port)
    subscribe(options, (topic, SubOptions(1, no_local=True, retain_as_published=True)),
              identifier=9)
    publisher = RawClient(broker.port)
    publisher.connect()
    sent = encode(Publish(topic, b"payload", retain=True))
    publisher.send(sent)
    # Retain cleared for an existing subscription [MQTT-3.3.1-9]; otherwise byte for byte.
    assert v3.recv_bytes(len(sent)) == bytes((sent[0] & ~0x01,)) + sent[1:]
    assert options.recv_packet().retain is True
    nothing_more(v3, level=4)
    publisher.send(encode(Publish(topic, b"", retain=True)))
    for raw in (v3, options, publisher):
        raw.close()

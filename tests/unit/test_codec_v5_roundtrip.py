"""Hypothesis round trips of MQTT 5 packets with random property sets: any subset of the
properties a packet may carry, with any value the property may take, encodes and decodes
back to the same packet, split anywhere, by the side that receives it. The catalogue of
hand-written bytes is `test_codec_v5.py`; this proves the encoder and decoder agree on the
rest of the space, and that every value the rules allow gets through them."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.wire import drain

from broker.codec import (
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    FrameDecoder,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    SubOptions,
    Subscribe,
    UnsubAck,
    Unsubscribe,
    Will,
    encode,
)
from broker.codec.primitives import DISCOURAGED, VARINT_MAX
from broker.codec.properties import NOT_ZERO, PROPERTIES, ZERO_OR_ONE
from broker.codec.reasons import REASONS

ROUND_TRIP = settings(max_examples=200, deadline=None,
                      suppress_health_check=[HealthCheck.too_slow])

# Text an MQTT string may hold and the decoder accepts (no U+0000, controls, non-characters).
texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), max_size=8
                ).filter(lambda text: not DISCOURAGED.search(text))
levels = texts.filter(lambda text: not any(c in text for c in "+#/"))
topic_names = st.lists(levels, min_size=1, max_size=3).map("/".join).filter(bool)
topic_filters = st.one_of(topic_names, st.just("#"), topic_names.map(lambda t: t + "/+"))
packet_ids = st.integers(1, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)

_BY_WIRE_TYPE: dict[str, st.SearchStrategy[Any]] = {
    "byte": st.integers(0, 255), "u16": st.integers(0, 0xFFFF), "u32": u32,
    "varint": st.integers(0, VARINT_MAX), "utf8": texts, "binary": st.binary(max_size=12),
    "pair": st.tuples(texts, texts),
}


def value_of(name: str, wire_type: str) -> st.SearchStrategy[Any]:
    """Every value the codec must accept for the property `name`."""
    if name in ZERO_OR_ONE:
        return st.integers(0, 1)
    if name == "subscription_identifier":
        return st.integers(1, VARINT_MAX)
    if name in NOT_ZERO or name == "topic_alias":
        return st.integers(1, 0xFFFF if wire_type == "u16" else 0xFFFFFFFF)
    if name == "response_topic":
        return topic_names
    return _BY_WIRE_TYPE[wire_type]


@st.composite
def properties(draw: st.DrawFn, packet: str, exclude: frozenset[str] = frozenset(),
               many_subscription_ids: bool = False) -> dict[str, Any]:
    """A random subset of `packet`'s properties, in a random order, each with a valid value."""
    names = [name for name, _t, packets in PROPERTIES.values()
             if packet in packets and name not in exclude]
    chosen = draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names))) if names \
        else []
    wire_types = {name: wire_type for name, wire_type, _p in PROPERTIES.values()}
    props: dict[str, Any] = {}
    for name in chosen:
        value = value_of(name, wire_types[name])
        if name == "user_property":
            props[name] = draw(st.lists(value, min_size=1, max_size=3))
        elif name == "subscription_identifier":
            props[name] = draw(st.lists(value, min_size=1, max_size=3 if many_subscription_ids
                                        else 1))
        else:
            props[name] = draw(value)
    if "authentication_data" in props and "authentication_method" not in props:
        props["authentication_method"] = draw(texts)  # data needs a method
    return props


def reasons(packet: str) -> st.SearchStrategy[int]:
    return st.sampled_from(sorted(REASONS[packet][0]))


@st.composite
def connects(draw: st.DrawFn) -> Connect:
    will = None
    if draw(st.booleans()):
        will = Will(draw(topic_names), draw(st.binary(max_size=16)), draw(st.integers(0, 2)),
                    draw(st.booleans()), draw(properties("WILL")))
    return Connect(draw(texts), 5, draw(st.booleans()), draw(st.integers(0, 0xFFFF)), will,
                   draw(st.none() | texts), draw(st.none() | st.binary(max_size=8)),
                   draw(properties("CONNECT")))


@st.composite
def connacks(draw: st.DrawFn) -> ConnAck:
    reason = draw(reasons("CONNACK"))
    return ConnAck(reason, not reason and draw(st.booleans()), draw(properties("CONNACK")))


@st.composite
def publishes(draw: st.DrawFn, from_server: bool) -> Publish:
    qos = draw(st.integers(0, 2))
    exclude = frozenset() if from_server else frozenset({"subscription_identifier"})
    props = draw(properties("PUBLISH", exclude, many_subscription_ids=True))
    topic = draw(topic_names)
    if "topic_alias" in props and draw(st.booleans()):
        topic = ""  # the alias stands for it (5.0 section 3.3.2.3.4)
    return Publish(topic, draw(st.binary(max_size=40)), qos, draw(st.booleans()),
                   qos > 0 and draw(st.booleans()), draw(packet_ids) if qos else 0, props)


@st.composite
def acks(draw: st.DrawFn) -> PubAck | PubRec | PubRel | PubComp:
    cls = draw(st.sampled_from([PubAck, PubRec, PubRel, PubComp]))
    name = cls.__name__.upper()
    return cls(draw(packet_ids), draw(reasons(name)), draw(properties(name)))


sub_options = st.builds(SubOptions, st.integers(0, 2), st.booleans(), st.booleans(),
                        st.integers(0, 2))
shared = st.builds(lambda group, topic_filter, options: (
    f"$share/{group}/{topic_filter}",
    SubOptions(options.qos, False, options.retain_as_published, options.retain_handling)),
    levels.filter(bool), topic_filters, sub_options)  # no local is refused on a shared one


@st.composite
def subscribes(draw: st.DrawFn) -> Subscribe:
    pairs = draw(st.lists(st.one_of(st.tuples(topic_filters, sub_options), shared),
                          min_size=1, max_size=4))
    return Subscribe(draw(packet_ids), tuple(pairs), draw(properties("SUBSCRIBE")))


@st.composite
def subacks(draw: st.DrawFn) -> SubAck:
    codes = draw(st.lists(reasons("SUBACK"), min_size=1, max_size=5))
    return SubAck(draw(packet_ids), tuple(codes), draw(properties("SUBACK")))


@st.composite
def unsubscribes(draw: st.DrawFn) -> Unsubscribe:
    filters = draw(st.lists(topic_filters, min_size=1, max_size=4))
    return Unsubscribe(draw(packet_ids), tuple(filters), draw(properties("UNSUBSCRIBE")))


@st.composite
def unsubacks(draw: st.DrawFn) -> UnsubAck:
    codes = draw(st.lists(reasons("UNSUBACK"), min_size=1, max_size=5))
    return UnsubAck(draw(packet_ids), tuple(codes), draw(properties("UNSUBACK")))


@st.composite
def disconnects(draw: st.DrawFn, from_server: bool) -> Disconnect:
    exclude = frozenset({"session_expiry_interval"}) if from_server else frozenset()
    return Disconnect(draw(reasons("DISCONNECT")), draw(properties("DISCONNECT", exclude)))


@st.composite
def auths(draw: st.DrawFn) -> Auth:
    if draw(st.booleans()):
        return Auth()  # the short form needs no method
    props = draw(properties("AUTH"))
    props.setdefault("authentication_method", draw(texts))
    return Auth(draw(reasons("AUTH")), props)


# What a server decodes (sent by a client), and what a client decodes (sent by a server).
from_clients = st.one_of(connects(), publishes(False), acks(), subscribes(), unsubscribes(),
                         st.just(PingReq()), disconnects(False), auths())
from_servers = st.one_of(connacks(), publishes(True), acks(), subacks(), unsubacks(),
                         st.just(PingResp()), disconnects(True), auths())


def _round_trip(packets: list[Any], server_side: bool, cuts: list[int]) -> None:
    stream = b"".join(encode(p, 5) for p in packets)
    decoder = FrameDecoder(server_side=server_side, protocol_level=5)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    got = []
    for a, b in zip([0, *points], [*points, len(stream)], strict=True):
        decoder.feed(stream[a:b])
        got.extend(drain(decoder))
    assert got == packets
    assert decoder.buffered() == 0


@ROUND_TRIP
@given(packets=st.lists(from_clients, min_size=1, max_size=4),
       cuts=st.lists(st.integers(0, 100_000), max_size=4))
def test_v5_packets_a_client_sends_round_trip_split_anywhere(packets: list[Any],
                                                             cuts: list[int]):
    # A CONNECT in the stream sets the decoder's level: it is 5 already, so nothing changes.
    _round_trip(packets, True, cuts)


@ROUND_TRIP
@given(packets=st.lists(from_servers, min_size=1, max_size=4),
       cuts=st.lists(st.integers(0, 100_000), max_size=4))
def test_v5_packets_a_server_sends_round_trip_split_anywhere(packets: list[Any],
                                                             cuts: list[int]):
    _round_trip(packets, False, cuts)


@ROUND_TRIP
@given(packet=st.one_of(acks(), disconnects(False), auths()))
def test_the_encoder_writes_the_short_form_exactly_when_it_can(packet: Any):
    # 5.0 sections 3.4.2.1 (and its kin), 3.14.2.1, 3.15.2.1: success and no properties is
    # the bare packet id (acks) or an empty body; a reason without properties drops the
    # property length.
    wire = encode(packet, 5)
    body_start = 2 if isinstance(packet, (PubAck, PubRec, PubRel, PubComp)) else 0
    body = len(wire) - 2 - body_start
    if not packet.properties:
        assert body == (0 if packet.reason_code == 0 else 1)
    else:
        assert body > 2

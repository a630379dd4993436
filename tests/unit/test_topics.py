"""Topic names and filters, the `matches` oracle, and the two tries checked against it.

`matches` is tested against a table from the spec's own examples; `TopicTree.match` and
`RetainedMessages.match` are then tested against brute force over `matches` with hypothesis.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.core.message import Message
from broker.core.retained import RetainedMessages
from broker.core.topic_tree import TopicTree
from broker.errors import MalformedPacket, ReasonCode
from broker.topics import matches, parse_shared, validate_filter, validate_topic_name

TREE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------------------ validation

VALID_FILTERS = [
    "a", "a/b", "#", "+", "a/#", "+/+", "/", "//", "a//b", "+/#", "/#", "/+", "$SYS/#",
    "$SYS/+/x", "sport/tennis/+/ranking", "sport/+", "a/+/b/#", "\u00fc/+",
    "$share/g/a", "$share/g/#", "$share/g/+/x", "$share/group-1/a/b/#",
    "$sharex/a",  # not the shared prefix: an ordinary filter
    "$share",  # likewise: no "/" after it
]

INVALID_FILTERS = [
    ("", "empty [MQTT-4.7.3-1]"),
    ("a/#/b", "# not last [MQTT-4.7.1-2]"),
    ("#/a", "# not last [MQTT-4.7.1-2]"),
    ("a#", "# not a whole level [MQTT-4.7.1-2]"),
    ("a/b#", "# not a whole level [MQTT-4.7.1-2]"),
    ("##", "# not a whole level [MQTT-4.7.1-2]"),
    ("a+", "+ not a whole level [MQTT-4.7.1-3]"),
    ("+a", "+ not a whole level [MQTT-4.7.1-3]"),
    ("a/+b/c", "+ not a whole level [MQTT-4.7.1-3]"),
    ("++", "+ not a whole level [MQTT-4.7.1-3]"),
    ("sport+", "the spec's own example [MQTT-4.7.1-3]"),
    ("$share/g", "shared without a filter [MQTT-4.8.2-1]"),
    ("$share/g/", "shared with an empty filter [MQTT-4.8.2-1]"),
    ("$share//a", "shared with an empty group [MQTT-4.8.2-1]"),
    ("$share/g+/a", "wildcard in the group [MQTT-4.8.2-2]"),
    ("$share/#/a", "wildcard in the group [MQTT-4.8.2-2]"),
    ("$share/g/a/#/b", "invalid inner filter [MQTT-4.7.1-2]"),
    ("$share/g/a+", "invalid inner filter [MQTT-4.7.1-3]"),
]


@pytest.mark.parametrize("topic_filter", VALID_FILTERS)
def test_valid_filter_is_accepted(topic_filter: str):
    assert validate_filter(topic_filter) is None


@pytest.mark.parametrize(("topic_filter", "why"), INVALID_FILTERS)
def test_invalid_filter_is_malformed(topic_filter: str, why: str):
    with pytest.raises(MalformedPacket) as info:
        validate_filter(topic_filter)
    assert info.value.reason_code == ReasonCode.MALFORMED_PACKET


@pytest.mark.parametrize("topic", ["a", "a/b", "/", "/a", "a/", "//", "$SYS/broker", "a b",
                                   "\u00fc/\u4e2d"])
def test_valid_topic_name_is_accepted(topic: str):
    assert validate_topic_name(topic) is None


@pytest.mark.parametrize("topic", ["", "+", "#", "a/+", "a/#", "a+", "sport/tennis#"])
def test_invalid_topic_name_is_malformed(topic: str):  # [MQTT-4.7.3-1] [MQTT-4.7.1-1]
    with pytest.raises(MalformedPacket):
        validate_topic_name(topic)


@pytest.mark.parametrize(("topic_filter", "expected"), [
    ("$share/g/a/b", ("g", "a/b")),
    ("$share/g/#", ("g", "#")),
    ("$share/consumers/+/x", ("consumers", "+/x")),
    ("$share/g//", ("g", "/")),
    ("a/b", None),
    ("$SYS/#", None),
    ("$sharex/g/a", None),
])
def test_parse_shared_splits_group_and_filter(topic_filter: str, expected):
    assert parse_shared(topic_filter) == expected


# ------------------------------------------------------------------------------ matches

MATCH_TABLE = [
    # (filter, topic, matches?) -- most from the spec's own examples in 4.7.1
    ("a/b", "a/b", True),
    ("a/b", "a/b/", False),
    ("a/b", "a", False),
    ("a/b", "A/b", False),  # case-sensitive [MQTT-4.7.3-4]
    ("sport/tennis/player1/#", "sport/tennis/player1", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
    ("sport/#", "sport", True),  # "a/#" matches "a" [MQTT-4.7.1-2]
    ("a/#", "a", True),
    ("a/#", "a/", True),
    ("a/#", "ab", False),
    ("a/b/#", "a", False),
    ("#", "a", True),
    ("#", "/", True),
    ("#", "a/b/c", True),
    ("sport/tennis/+", "sport/tennis/player1", True),
    ("sport/tennis/+", "sport/tennis/player1/ranking", False),
    ("sport/+", "sport", False),
    ("sport/+", "sport/", True),
    ("+", "a", True),
    ("+", "/x", False),
    ("+/+", "/x", True),  # "+" matches the empty first level
    ("/+", "/x", True),
    ("+/+", "a", False),
    ("a/+/c", "a//c", True),
    ("+/#", "a", True),
    ("+/a/#", "x/a", True),
    # $-topics: a filter starting with a wildcard does not match them [MQTT-4.7.2-1]
    ("#", "$SYS", False),
    ("#", "$SYS/broker/uptime", False),
    ("+", "$SYS", False),
    ("+/broker/uptime", "$SYS/broker/uptime", False),
    ("+/#", "$SYS/x", False),
    ("$SYS/#", "$SYS/broker/uptime", True),
    ("$SYS/#", "$SYS", True),
    ("$SYS/+/uptime", "$SYS/broker/uptime", True),
    ("$SYS/broker/uptime", "$SYS/broker/uptime", True),
    ("#", "a/$SYS", True),  # only a leading $ is special
    ("+/$x", "a/$x", True),
]


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), MATCH_TABLE)
def test_matches_follows_the_spec(topic_filter: str, topic: str, expected: bool):
    assert matches(topic_filter, topic) is expected


# The oracle is itself checked above; the tries below are checked against it.

def plain(result: tuple) -> list[tuple[str, int]]:
    """A match of subscriptions without MQTT 5 options, as (client id, QoS) pairs."""
    assert all(options is None for _client, _qos, options in result), result
    return [(client, qos) for client, qos, _options in result]


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), MATCH_TABLE)
def test_topic_tree_agrees_with_the_match_table(topic_filter: str, topic: str, expected: bool):
    tree = TopicTree()
    tree.subscribe("c", topic_filter, 1)
    assert plain(tree.match(topic)) == ([("c", 1)] if expected else [])


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), MATCH_TABLE)
def test_retained_agrees_with_the_match_table(topic_filter: str, topic: str, expected: bool):
    retained = RetainedMessages()
    message = Message(topic, b"x", 1, True)
    retained.set(message)
    assert retained.match(topic_filter) == ([message] if expected else [])


# ------------------------------------------------------------------------------ TopicTree


def test_overlapping_subscriptions_give_one_entry_at_the_highest_qos():
    tree = TopicTree()
    tree.subscribe("c", "a/+", 0)
    tree.subscribe("c", "a/#", 2)
    tree.subscribe("c", "a/b", 1)
    tree.subscribe("d", "#", 0)
    assert sorted(plain(tree.match("a/b"))) == [("c", 2), ("d", 0)]
    assert tree.count == 4


def test_resubscribe_replaces_the_qos_and_counts_once():
    tree = TopicTree()
    assert tree.subscribe("c", "a", 2) is False
    assert plain(tree.match("a")) == [("c", 2)]
    assert tree.subscribe("c", "a", 0) is True
    assert plain(tree.match("a")) == [("c", 0)]
    assert tree.count == 1


def test_unsubscribe_removes_only_that_subscription_and_prunes():
    tree = TopicTree()
    tree.subscribe("c", "a/b/c", 1)
    tree.subscribe("c", "a/#", 0)
    assert plain(tree.match("a/b/c")) == [("c", 1)]
    assert tree.unsubscribe("c", "a/b/c") is True
    assert plain(tree.match("a/b/c")) == [("c", 0)]
    assert tree.unsubscribe("c", "a/b/c") is False
    assert tree.unsubscribe("c", "a/b") is False
    assert tree.unsubscribe("x", "a/#") is False
    assert tree.unsubscribe("c", "a/#") is True
    assert plain(tree.match("a/b/c")) == []
    assert tree.count == 0
    assert tree._root.children == {}  # every emptied branch was pruned


def test_match_result_cannot_be_changed_by_a_caller():
    # The cached answer itself is handed out, so it must be immutable.
    tree = TopicTree()
    tree.subscribe("c", "a", 1)
    first = tree.match("a")  # not through plain(): the very object handed out
    with pytest.raises(AttributeError):
        first.append(("intruder", 2))  # type: ignore[attr-defined]
    assert plain(tree.match("a")) == [("c", 1)]


def test_match_cache_is_cleared_by_subscribe_and_unsubscribe():
    tree = TopicTree()
    tree.subscribe("c", "a/+", 1)
    assert plain(tree.match("a/b")) == [("c", 1)]  # now cached
    tree.subscribe("d", "a/b", 2)
    assert sorted(plain(tree.match("a/b"))) == [("c", 1), ("d", 2)]
    tree.unsubscribe("c", "a/+")
    assert plain(tree.match("a/b")) == [("d", 2)]


# Shared subscriptions: one member per group per publish, round-robin over the members.

def test_shared_group_delivers_to_one_member_per_publish_round_robin():
    tree = TopicTree()
    for member in ("m1", "m2", "m3"):
        tree.subscribe(member, "$share/g/jobs/+", 1)
    picks = []
    for _ in range(9):
        result = plain(tree.match("jobs/x"))
        assert len(result) == 1
        picks.append(result[0])
    assert sorted(picks) == sorted([("m1", 1), ("m2", 1), ("m3", 1)] * 3)
    # round-robin: each window of three consecutive publishes reaches every member once
    for start in range(0, 9, 3):
        assert {p[0] for p in picks[start:start + 3]} == {"m1", "m2", "m3"}


def test_each_shared_group_and_plain_subscribers_all_receive():
    tree = TopicTree()
    tree.subscribe("a1", "$share/A/t", 0)
    tree.subscribe("a2", "$share/A/t", 0)
    tree.subscribe("b1", "$share/B/#", 2)
    tree.subscribe("p", "t", 1)
    for _ in range(4):
        result = dict(plain(tree.match("t")))
        assert len([c for c in result if c in ("a1", "a2")]) == 1
        assert result["b1"] == 2
        assert result["p"] == 1
        assert len(result) == 3


def test_shared_group_member_that_also_subscribes_plainly_gets_one_copy_at_max_qos():
    tree = TopicTree()
    tree.subscribe("c", "$share/g/t", 2)
    tree.subscribe("c", "t", 0)
    assert plain(tree.match("t")) == [("c", 2)]
    assert tree.count == 2


def test_shared_group_member_leaving_keeps_the_rest_served():
    tree = TopicTree()
    tree.subscribe("m1", "$share/g/t", 1)
    tree.subscribe("m2", "$share/g/t", 1)
    assert tree.unsubscribe("m1", "$share/g/t") is True
    assert [plain(tree.match("t")) for _ in range(3)] == [[("m2", 1)]] * 3
    assert tree.unsubscribe("m2", "$share/g/t") is True
    assert plain(tree.match("t")) == []
    assert tree.count == 0


def test_shared_wildcard_group_does_not_match_dollar_topics():  # [MQTT-4.7.2-1]
    tree = TopicTree()
    tree.subscribe("m", "$share/g/#", 1)
    assert plain(tree.match("$SYS/x")) == []
    assert plain(tree.match("x")) == [("m", 1)]


# Hypothesis: the tree against brute force over `matches`.

LEVELS = ["a", "b", "", "$SYS", "$x"]
topic_st = st.lists(st.sampled_from(LEVELS), min_size=1, max_size=4).map("/".join).filter(bool)
filter_st = st.builds(
    lambda levels, tail: "/".join([*levels, *tail]),
    st.lists(st.sampled_from([*LEVELS, "+"]), min_size=1, max_size=4),
    st.sampled_from([[], ["#"]]),
).filter(bool) | st.just("#")
subs_st = st.lists(st.tuples(st.sampled_from(["c1", "c2", "c3", "c4"]), filter_st,
                             st.integers(0, 2)), max_size=25)


def brute_force(subs: dict[tuple[str, str], int], topic: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for (client, topic_filter), qos in subs.items():
        if matches(topic_filter, topic) and out.get(client, -1) < qos:
            out[client] = qos
    return out


def as_dict(result: list[tuple[str, int]]) -> dict[str, int]:
    as_map = dict(result)
    assert len(as_map) == len(result), f"a client appears twice: {result}"
    return as_map


@TREE
@given(subs=subs_st, topics=st.lists(topic_st, min_size=1, max_size=8), data=st.data())
def test_topic_tree_matches_brute_force_before_and_after_unsubscribes(subs, topics, data):
    for topic_filter in (f for _c, f, _q in subs):
        validate_filter(topic_filter)
    tree = TopicTree()
    live: dict[tuple[str, str], int] = {}
    for client, topic_filter, qos in subs:
        assert tree.subscribe(client, topic_filter, qos) is ((client, topic_filter) in live)
        live[(client, topic_filter)] = qos  # the later subscription replaces the earlier
    assert tree.count == len(live)
    for topic in topics:
        assert as_dict(plain(tree.match(topic))) == brute_force(live, topic)

    gone = data.draw(st.lists(st.sampled_from(sorted(live)), unique=True) if live
                     else st.just([]))
    for key in gone:
        assert tree.unsubscribe(*key) is True
        del live[key]
    # unsubscribing twice, or what was never there, changes nothing
    for key in gone:
        assert tree.unsubscribe(*key) is False
    assert tree.count == len(live)
    for topic in topics:  # these answers were cached before the unsubscribes
        assert as_dict(plain(tree.match(topic))) == brute_force(live, topic)
    if not live:
        assert tree._root.children == {}


# ------------------------------------------------------------------------------ retained

def test_retained_set_replaces_and_counts_topics():
    retained = RetainedMessages()
    first, second = Message("a/b", b"1", 0, True), Message("a/b", b"2", 1, True)
    retained.set(first)
    retained.set(second)
    assert retained.count == 1
    assert retained.get("a/b") is second
    assert retained.match("a/#") == [second]


def test_retained_empty_payload_clears_the_topic():  # [MQTT-3.3.1-10]
    retained = RetainedMessages()
    retained.set(Message("a/b", b"x", 0, True))
    retained.set(Message("a/c", b"y", 0, True))
    retained.set(Message("a/b", b"", 0, True))
    assert retained.get("a/b") is None
    assert retained.count == 1
    assert [m.topic for m in retained.match("a/+")] == ["a/c"]
    retained.set(Message("never/set", b"", 0, True))  # clearing nothing is harmless
    assert retained.count == 1


def test_retained_clear_reports_whether_something_was_there_and_prunes():
    retained = RetainedMessages()
    retained.set(Message("a/b/c", b"x", 0, True))
    retained.set(Message("a", b"y", 0, True))
    assert retained.clear("a/b") is False
    assert retained.clear("a/b/c") is True
    assert retained.clear("a/b/c") is False
    assert retained.count == 1
    assert list(retained._root.children["a"].children) == []
    assert retained.clear("a") is True
    assert retained._root.children == {}
    assert retained.all() == []


def test_retained_match_on_a_shared_filter_uses_its_inner_filter():
    retained = RetainedMessages()
    message = Message("jobs/1", b"x", 0, True)
    retained.set(message)
    assert retained.match("$share/g/jobs/+") == [message]


retained_ops = st.lists(st.tuples(topic_st, st.sampled_from([b"", b"x", b"yz"])), max_size=25)


@TREE
@given(ops=retained_ops, filters=st.lists(filter_st, min_size=1, max_size=8))
def test_retained_match_equals_brute_force(ops, filters):
    retained = RetainedMessages()
    model: dict[str, Message] = {}
    for topic, payload in ops:
        message = Message(topic, payload, 0, True)
        retained.set(message)
        if payload:
            model[topic] = message
        else:
            model.pop(topic, None)
    assert retained.count == len(model)
    assert sorted(m.topic for m in retained.all()) == sorted(model)
    for topic in model:
        assert retained.get(topic) is model[topic]
    for topic_filter in filters:
        got = retained.match(topic_filter)
        assert len(got) == len({id(m) for m in got}), "a message came out twice"
        expected = {t for t in model if matches(topic_filter, t)}
        assert {m.topic for m in got} == expected
        assert all(model[m.topic] is m for m in got)

"""The topic tree with MQTT 5 subscription options: no local, retain as published and
subscription identifiers merged into one delivery per client, shared groups that prefer online
members, and the same brute-force oracle (`topics.matches`) as the 3.1.1 tests, extended to
options."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.core.topic_tree import MatchOptions, TopicTree
from broker.topics import matches, validate_filter

TREE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def options_of(tree: TopicTree, topic: str) -> dict[str, MatchOptions | None]:
    result = tree.match(topic)
    return {client: options for client, _qos, options in result}


def test_a_v5_subscription_without_options_is_as_cheap_as_a_3_1_1_one():
    tree = TopicTree()
    tree.subscribe("v3", "t", 1)
    tree.subscribe("v5", "t", 2, no_local=False, retain_as_published=False, identifier=0)
    assert sorted(tree.match("t")) == [("v3", 1, None), ("v5", 2, None)]


def test_overlapping_subscriptions_give_one_delivery_with_every_identifier():  # [MQTT-3.3.4-4]
    tree = TopicTree()
    tree.subscribe("c", "a/+", 0, identifier=2)
    tree.subscribe("c", "a/#", 1, identifier=1)
    tree.subscribe("c", "a/b", 2)  # no identifier, highest QoS
    tree.subscribe("c", "x", 1, identifier=3)  # does not match
    [(client, qos, options)] = tree.match("a/b")
    assert (client, qos) == ("c", 2)
    assert options is not None
    assert options.identifiers == (1, 2)
    assert not options.retain_as_published
    assert not options.no_local


def test_retain_as_published_on_any_matching_subscription_keeps_the_flag():
    tree = TopicTree()
    tree.subscribe("c", "a/#", 1, retain_as_published=True)
    tree.subscribe("c", "a/b", 0)
    options = options_of(tree, "a/b")["c"]
    assert options is not None and options.retain_as_published and options.identifiers == ()


def test_no_local_leaves_the_clients_own_messages_to_its_other_subscriptions():
    tree = TopicTree()
    tree.subscribe("c", "t/#", 2, no_local=True, identifier=5)
    [(_client, qos, options)] = tree.match("t/x")
    assert qos == 2 and options is not None  # [MQTT-3.8.3-3]
    assert options.no_local and options.own is None
    tree.subscribe("c", "t/+", 0, identifier=6)
    [(_client, qos, options)] = tree.match("t/x")
    assert qos == 2 and options is not None and options.identifiers == (5, 6)
    own = options.own
    assert own is not None and (own.qos, own.identifiers) == (0, (6,))


def test_replacing_a_subscription_moves_it_between_plain_and_optioned():
    tree = TopicTree()
    assert tree.subscribe("c", "a/b", 1, identifier=9) is False
    assert tree.subscribe("c", "a/b", 2) is True
    assert tree.match("a/b") == (("c", 2, None),)
    assert tree.subscribe("c", "a/b", 0, no_local=True) is True
    assert options_of(tree, "a/b")["c"] is not None
    assert tree.count == 1
    assert tree.unsubscribe("c", "a/b") is True
    assert tree.match("a/b") == ()
    assert tree._root.children == {}  # pruned, optioned subscriptions too


def test_shared_member_with_an_identifier_merges_with_its_own_subscription():
    tree = TopicTree()
    tree.subscribe("m", "$share/g/t", 1, identifier=4)
    tree.subscribe("m", "t", 2, identifier=8)
    [(client, qos, options)] = tree.match("t")
    assert (client, qos) == ("m", 2)
    assert options is not None and options.identifiers == (4, 8)


def test_shared_group_prefers_online_members_and_falls_back_to_turns():
    tree = TopicTree()
    for member in ("m1", "m2", "m3"):
        tree.subscribe(member, "$share/g/t", 1)
    online = {"m2"}
    picks = [tree.match("t", online.__contains__)[0][0] for _ in range(4)]
    assert picks == ["m2"] * 4
    online = {"m1", "m3"}
    picks = [tree.match("t", online.__contains__)[0][0] for _ in range(4)]
    assert sorted(picks) == ["m1", "m1", "m3", "m3"]
    nobody: set[str] = set()
    picks = [tree.match("t", nobody.__contains__)[0][0] for _ in range(6)]
    assert sorted(picks) == ["m1", "m1", "m2", "m2", "m3", "m3"]  # every offline one in turn


def test_pick_member_never_picks_the_member_leaving():
    tree = TopicTree()
    tree.subscribe("m1", "$share/g/a/+", 1)
    tree.subscribe("m2", "$share/g/a/+", 2, retain_as_published=True, identifier=3)
    for _ in range(3):
        picked = tree.pick_member("$share/g/a/+", skip="m1")
        assert picked is not None
        client, qos, options = picked
        assert (client, qos) == ("m2", 2)
        assert options is not None and options.identifiers == (3,)
    assert tree.has_member("$share/g/a/+", skip="m1")
    tree.unsubscribe("m2", "$share/g/a/+")
    assert not tree.has_member("$share/g/a/+", skip="m1")
    assert tree.pick_member("$share/g/a/+", skip="m1") is None
    assert tree.pick_member("$share/other/a/+") is None


# Hypothesis: the tree with options against brute force over `matches`.

LEVELS = ["a", "b", "", "$x"]
topic_st = st.lists(st.sampled_from(LEVELS), min_size=1, max_size=3).map("/".join).filter(bool)
filter_st = st.builds(
    lambda levels, tail: "/".join([*levels, *tail]),
    st.lists(st.sampled_from([*LEVELS, "+"]), min_size=1, max_size=3),
    st.sampled_from([[], ["#"]]),
).filter(bool) | st.just("#")
# (qos, no local, retain as published, identifier)
sub_st = st.tuples(st.integers(0, 2), st.booleans(), st.booleans(),
                   st.sampled_from([0, 0, 1, 2, 268_435_455]))
subs_st = st.lists(st.tuples(st.sampled_from(["c1", "c2", "c3"]), filter_st, sub_st),
                   max_size=20)

Seen = tuple[int, bool, tuple[int, ...]]


def _merged(subs: list[tuple[int, bool, bool, int]]) -> Seen:
    return (max(s[0] for s in subs), any(s[2] for s in subs),
            tuple(sorted({s[3] for s in subs if s[3]})))


def brute_force(live: dict[tuple[str, str], tuple[int, bool, bool, int]],
                topic: str) -> dict[str, tuple[Seen, Seen | None]]:
    """client -> (what a delivery gets, what a delivery of its own message gets or None)."""
    found: dict[str, list[tuple[int, bool, bool, int]]] = {}
    for (client, topic_filter), sub in live.items():
        if matches(topic_filter, topic):
            found.setdefault(client, []).append(sub)
    out = {}
    for client, subs in found.items():
        rest = [s for s in subs if not s[1]]
        out[client] = (_merged(subs), _merged(rest) if rest else None)
    return out


def seen(result: tuple) -> dict[str, tuple[Seen, Seen | None]]:
    out = {}
    for client, qos, options in result:
        assert client not in out, f"a client appears twice: {result}"
        if options is None:
            out[client] = ((qos, False, ()), (qos, False, ()))
            continue
        assert options.qos == qos
        own = options.own if options.no_local else options
        out[client] = ((qos, options.retain_as_published, options.identifiers),
                       None if own is None else (own.qos, own.retain_as_published,
                                                 own.identifiers))
    return out


@TREE
@given(subs=subs_st, topics=st.lists(topic_st, min_size=1, max_size=6), data=st.data())
def test_topic_tree_with_options_matches_brute_force(subs, topics, data):
    for _client, topic_filter, _sub in subs:
        validate_filter(topic_filter)
    tree = TopicTree()
    live: dict[tuple[str, str], tuple[int, bool, bool, int]] = {}
    for client, topic_filter, sub in subs:
        assert tree.subscribe(client, topic_filter, *sub) is ((client, topic_filter) in live)
        live[(client, topic_filter)] = sub
    assert tree.count == len(live)
    for topic in topics:
        assert seen(tree.match(topic)) == brute_force(live, topic)
    gone = data.draw(st.lists(st.sampled_from(sorted(live)), unique=True) if live
                     else st.just([]))
    for key in gone:
        assert tree.unsubscribe(*key) is True
        del live[key]
    for topic in topics:  # cached before the unsubscribes
        assert seen(tree.match(topic)) == brute_force(live, topic)
    if not live:
        assert tree._root.children == {}

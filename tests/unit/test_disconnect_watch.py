"""`DisconnectWatch`: when a client's connections keep ending by a peer close after the same,
too short, time, one warning names a proxy or NAT idle timeout; anything else stays quiet."""

from __future__ import annotations

from collections import OrderedDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.core import disconnect_watch
from broker.core.disconnect_watch import (
    MAX_CLIENTS,
    NEVER,
    REPEAT_AFTER,
    SHORT,
    STREAK,
    DisconnectWatch,
    diagnosis,
    looks_like_idle_timeout,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def watch():
    warnings: list[str] = []
    clock = Clock()
    w = DisconnectWatch(clock=clock, warn=warnings.append)
    w.warnings = warnings
    w.clock = clock
    return w


def cut(watch, durations, keepalive=30, client="dev-1", by_peer=True):
    return [watch.ended(client, keepalive, d, by_peer) for d in durations]


def test_three_peer_closes_after_about_60s_with_keepalive_60_warn_once(watch):
    results = cut(watch, [60.1, 60.0, 60.2], keepalive=60)
    assert results[:2] == [None, None] and results[2] is not None
    [message] = watch.warnings
    assert "client dev-1: its last 3 connections were each closed by the peer after about 60 s" \
        in message
    assert "a proxy or NAT idle timeout of about 60 s versus the client's keepalive 60 s" \
        in message
    assert "above 1.5 x 60 = 90 s" in message


def test_later_cuts_of_the_same_client_do_not_warn_again_within_the_hour(watch):
    cut(watch, [60.1, 60.0, 60.2, 60.1, 59.9, 60.0], keepalive=60)
    assert len(watch.warnings) == 1
    watch.clock.now += REPEAT_AFTER + 1
    cut(watch, [60.0], keepalive=60)
    assert len(watch.warnings) == 2


def test_durations_more_than_10_percent_apart_are_not_a_timeout(watch):
    cut(watch, [20.0, 25.0, 20.0], keepalive=30)
    assert watch.warnings == []


def test_connections_longer_than_one_and_a_half_keepalives_are_not_an_idle_cut(watch):
    # A client pinging every 30 s is never idle for 60 s: something else ends these.
    cut(watch, [60.0, 60.1, 60.0], keepalive=30)
    assert watch.warnings == []


def test_a_clean_disconnect_breaks_the_streak(watch):
    cut(watch, [2.0, 2.1])
    cut(watch, [2.0], by_peer=False)
    cut(watch, [2.0, 2.0])
    assert watch.warnings == []
    cut(watch, [2.1])
    assert len(watch.warnings) == 1


def test_each_client_has_its_own_streak(watch):
    cut(watch, [2.0, 2.0], client="a")
    cut(watch, [2.0], client="b")
    assert watch.warnings == []
    cut(watch, [2.0], client="a")
    assert len(watch.warnings) == 1 and "client a:" in watch.warnings[0]


def test_instant_disconnects_are_a_crash_loop_not_a_timeout(watch):
    cut(watch, [0.05, 0.05, 0.05])
    assert watch.warnings == []


def test_keepalive_0_is_cut_by_any_idle_timeout_and_says_so(watch):
    cut(watch, [120.0, 121.0, 119.5], keepalive=0)
    [message] = watch.warnings
    assert "keepalive is 0, so it never pings" in message and "below 80 s" in message


def test_memory_is_bounded_by_the_number_of_client_ids(watch):
    for i in range(MAX_CLIENTS + 50):
        watch.ended(f"auto-{i}", 30, 2.0, True)
    assert len(watch) == MAX_CLIENTS


def test_clients_that_left_cleanly_or_at_once_are_forgotten(watch):
    # A devices' fleet that ends cleanly (or crash-loops) leaves nothing behind.
    for i in range(1000):
        watch.ended(f"dev-{i}", 30, 2.0, True)
    for i in range(500):
        watch.ended(f"dev-{i}", 30, 2.0, False)
    for i in range(500, 1000):
        watch.ended(f"dev-{i}", 30, 0.05, True)
    assert len(watch) == 0


def test_a_client_warned_within_the_hour_is_remembered_after_a_clean_end(watch):
    cut(watch, [2.0, 2.0, 2.0])
    cut(watch, [2.0], by_peer=False)
    assert len(watch) == 1
    cut(watch, [2.0, 2.0, 2.0])
    assert len(watch.warnings) == 1  # not again within REPEAT_AFTER


def test_cuts_of_known_clients_allocate_nothing_that_outlives_them(watch):
    # Objects kept from a burst of closes pin CPython's memory pools (bench/slow_readers.py):
    # once a client id is known, its later cuts are written in place.
    import tracemalloc

    ids = [f"slow-{i}" for i in range(1000)]
    for client in ids:
        watch.ended(client, 600, 1.5, True)
    tracemalloc.start()  # traces only what is allocated from here on
    try:
        for round_ in range(5):
            for client in ids:
                watch.ended(client, 600, 1.5 * (1 + round_ % 2), True)  # a new float; no warning
        kept = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(True, "*disconnect_watch.py")])
    finally:
        tracemalloc.stop()
    # (CPython's float free list may keep a few of the temporaries: up to 100)
    assert len(kept.traces) < 100, kept.statistics("lineno")[:5]


def test_remembering_a_client_keeps_no_object_of_it(watch):
    # Its first cut, in a burst of closes, must not keep the id (or a node or slot number
    # for it) where the burst's connections were: they would pin those memory pools.
    import sys
    import tracemalloc

    ids = ["".join(("slow-", str(i))) for i in range(1000)]  # strings no one else holds
    refs = [sys.getrefcount(client) for client in ids]
    tracemalloc.start()
    try:
        for client in ids:
            watch.ended(client, 600, 1.5, True)
        del client  # the loop's own reference
        kept = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(True, "*disconnect_watch.py")])
    finally:
        tracemalloc.stop()
    assert len(watch) == 1000
    assert [sys.getrefcount(client) for client in ids] == refs
    # the arrays grow in a few big blocks, not an allocation per client
    assert len(kept.traces) < 20, kept.statistics("lineno")[:5]


def test_forgetting_clients_keeps_the_others_found(watch):
    for i in range(300):
        watch.ended(f"dev-{i}", 0, 2.0, True)
    for i in range(0, 300, 3):
        watch.ended(f"dev-{i}", 0, 2.0, False)  # forgotten: the table closes their holes
    assert len(watch) == 200
    for i in range(300):
        watch.ended(f"dev-{i}", 0, 2.0, True)
        watch.ended(f"dev-{i}", 0, 2.0, True)
    # the ones remembered throughout had three cuts by now, the forgotten ones two
    assert len(watch.warnings) == 200
    assert {m.split(":")[0] for m in watch.warnings} == \
        {f"client dev-{i}" for i in range(300) if i % 3}


class ModelWatch:
    """The rules of the module docstring with a plain ordered dict: what the hash table in
    arrays must behave exactly like (the watch's own first form)."""

    def __init__(self, clock, max_clients: int) -> None:
        self.clients: OrderedDict[str, list] = OrderedDict()  # id -> [durations, warned_at]
        self.clock, self.max_clients = clock, max_clients

    def __len__(self) -> int:
        return len(self.clients)

    def ended(self, client_id, keepalive, duration, by_peer):
        entry = self.clients.get(client_id)
        if not by_peer or duration < SHORT:
            if entry is not None:
                entry[0] = []
                if self.clock() - entry[1] >= REPEAT_AFTER:
                    del self.clients[client_id]
            return None
        if entry is None:
            if len(self.clients) >= self.max_clients:
                self.clients.popitem(last=False)
            entry = self.clients[client_id] = [[], NEVER]
        else:
            self.clients.move_to_end(client_id)
        entry[0] = (entry[0] + [duration])[-STREAK:]
        if len(entry[0]) < STREAK or not looks_like_idle_timeout(entry[0], keepalive):
            return None
        if self.clock() - entry[1] < REPEAT_AFTER:
            return None
        entry[1] = self.clock()
        return diagnosis(client_id, keepalive, entry[0])


STEP = st.tuples(st.sampled_from(range(40)),  # which client: more than the watch keeps
                 st.booleans(),  # closed by the peer
                 st.sampled_from([0.05, 2.0, 2.05, 2.5, 5.0]),  # how long it lasted
                 st.sampled_from([0.0, 0.0, 10.0, REPEAT_AFTER]))  # time passing first


@settings(max_examples=100, deadline=None)
@given(st.lists(STEP, min_size=50, max_size=400))
def test_the_watch_behaves_like_an_ordered_dict_of_client_ids(steps):
    # Small enough to evict, and a table small enough that ids share probe runs: insertion,
    # lookup, eviction and the backward-shift deletion all run against the plain model.
    clock = Clock()
    real = DisconnectWatch(clock=clock, warn=lambda message: None)
    model = ModelWatch(clock, max_clients=8)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(disconnect_watch, "MAX_CLIENTS", 8)
        for client, by_peer, duration, wait in steps:
            clock.now += wait
            client_id = f"dev-{client}"
            assert real.ended(client_id, 30, duration, by_peer) == \
                model.ended(client_id, 30, duration, by_peer)
            assert len(real) == len(model)

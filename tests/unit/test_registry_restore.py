"""`SessionRegistry.restore(..., release=True)`, as start-up calls it: the same sessions,
queues, flights and retained messages as restoring without it, a message owed to several
sessions still one object, and the stored state emptied as it is rebuilt."""

from __future__ import annotations

from support.inprocess import InProcessBroker

from broker.core.session import queued_entry
from broker.store.base import restore
from broker.store.records import (
    MessageQueued,
    MessageStored,
    OutgoingSent,
    OutgoingStored,
    RetainedSet,
    SessionClosed,
    SessionOpened,
    Subscribed,
)

RECORDS = [
    MessageStored(1, "r/t", b"retained", 1, True),
    RetainedSet("r/t", 1),
    SessionOpened("a", 4, 0), Subscribed("a", "q/#", 1), SessionClosed("a", 10.0),
    SessionOpened("b", 5, 60), Subscribed("b", "q/#", 2, 7),
    *(MessageQueued(n, "q/x", bytes([n]), 1, False, "pub", {}, "a", 1, False, 0)
      for n in range(2, 8)),
    OutgoingStored("b", 3, 1, False, 0, (7,)),
    OutgoingStored("b", 1, 1, True, 0),
    OutgoingSent("a", 2, 1),
]


def picture(broker: InProcessBroker) -> dict:
    return {
        cid: (session.protocol_level, session.expiry, sorted(session.subscriptions),
              [(m.msg_id, m.payload, qos, retain, ids)
               for m, qos, retain, ids in map(queued_entry, session.queue)],
              [(pid, f.message.msg_id) for pid, f in session.inflight.items()])
        for cid, session in broker.ctx.registry.sessions.items()
    } | {"retained": [m.msg_id for m in broker.ctx.retained.all()]}


def test_restoring_with_release_rebuilds_the_same_state_and_empties_the_stored_one():
    kept, released = InProcessBroker(), InProcessBroker()
    kept.ctx.registry.restore(restore(RECORDS), kept.ctx.retained)
    state = restore(RECORDS)
    released.ctx.registry.restore(state, released.ctx.retained, release=True)
    assert picture(released) == picture(kept)
    assert picture(released)["a"][3][0][0] == 3  # msg 2 went into flight: 3 is first queued
    assert not state.sessions and not state.messages and not state.retained
    sessions = released.ctx.registry.sessions
    first_a, first_b = (queued_entry(sessions[cid].queue[0])[0] for cid in "ab")
    assert first_a is first_b  # one message, two owners
    assert sessions["b"].queue[1][0] is released.ctx.retained.all()[0]

"""`Handoff`: a session moving between two live nodes without losing the old owner's last
writes.

Fencing makes a claim safe whatever the old owner does, but it also refuses the old owner's
writes still in flight: the acknowledgements its client sent just before it reconnected
elsewhere (OutgoingDone, a QoS 2 PUBREC's OutgoingReleased). The new owner would then send
those messages again; for QoS 2 after PUBCOMP that is a second delivery. So before claiming,
a node asks a live owner to let go: the owner closes the connection (0x8E, as on a takeover)
and answers through the same group-committed writer as its records, so the answer reaches
Redis after every write it made for the session. The claim waits for that answer, at most
`RELEASE_TIMEOUT`; a dead or silent owner is simply fenced, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from gevent.event import Event

from . import scripts, wire
from .keys import Keys
from .redis_link import RedisLink
from .redis_store import RedisStore

log = logging.getLogger("greenfly.cluster.handoff")

RELEASE_TIMEOUT = 1.0  # seconds a claim waits for a live owner to let go


class Handoff:
    def __init__(self, link: RedisLink, keys: Keys, owner: str, store: RedisStore,
                 let_go: Callable[[str], None]) -> None:
        self.link = link
        self.keys = keys
        self.owner = owner
        self.store = store
        self.let_go = let_go  # close the connection and forget the session, recording nothing
        self._owner = link.script(scripts.OWNER)
        self._waiting: dict[str, Event] = {}
        self.released = 0  # sessions handed over by a live owner before a claim
        self.timeouts = 0  # claims that went on without the owner's answer

    def before_claim(self, client_id: str) -> None:
        """Ask the session's live owner, if another node, to let go; wait for it (bounded)."""
        current, alive = self._owner([self.keys.session(client_id)], [self.keys.prefix])
        current = current.decode()
        if not current or current == self.owner or not int(alive):
            return
        done = self._waiting[client_id] = Event()
        try:
            self.store.submit(("PUBLISH", self.keys.control(current),
                               wire.release(self.owner, client_id)))
            if done.wait(RELEASE_TIMEOUT):
                self.released += 1
            else:
                self.timeouts += 1
                log.info("cluster: %s did not let go of %s within %gs; claiming anyway "
                         "(its late writes are fenced)", current, client_id, RELEASE_TIMEOUT)
        finally:
            self._waiting.pop(client_id, None)

    def release_asked(self, data: bytes) -> None:
        """Another node is about to claim a session: let go of it, then answer behind every
        write already submitted for it."""
        requester, client_id = wire.parse_release(data)
        self.let_go(client_id)
        self.store.submit(("PUBLISH", self.keys.control(requester), wire.released(client_id)))

    def release_answered(self, data: bytes) -> None:
        waiting = self._waiting.get(data[1:].decode())
        if waiting is not None:
            waiting.set()


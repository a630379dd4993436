"""`Membership`: this node's lease, and what happens when another node's lease ends.

The lease is a key with a TTL of `lease_ms`, renewed four times per lease by a script that
refuses once a reaper has declared this owner dead: a node that was paused past its lease
(SIGSTOP, a frozen VM) learns it is out, and stops, so that systemd starts it again as a new
incarnation, instead of serving sessions that have moved on.

Every second each node looks at the others' leases. The first to see one gone takes
`reap:<owner>` (SET NX) and, once:
- publishes the wills of that owner's connections, each only if the session is still that
  owner's at the epoch the will was stored with (a client that moved on has none to send);
- withdraws its routes (every node drops them) and its wills, and forgets it.
- adopts that owner's persistent sessions still marked as its: they are offline sessions
  of the reaper from then on (they expire, their routes are announced). Their queues were
  in Redis all along (publishers append whatever became of the owner) and the client's next
  CONNECT, on any node, claims them as from any owner.
A restarted node reaps its own previous incarnations at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Callable

import gevent

from ..core.message import Message
from ..store.record_codec import decode_record
from ..store.records import MessageStored
from . import scripts, wire
from .keys import Keys
from .redis_link import RedisLink, RedisUnavailable
from .routes import Routes

log = logging.getLogger("greenfly.cluster.membership")

CHECK_INTERVAL = 1.0  # seconds between looks at the other nodes' leases
REAP_LOCK_MS = 60_000


class Membership:
    def __init__(self, link: RedisLink, keys: Keys, owner: str, node_id: str, lease_ms: int,
                 routes: Routes) -> None:
        self.link = link
        self.keys = keys
        self.owner = owner
        self.node_id = node_id
        self.lease_ms = lease_ms
        self.routes = routes
        self.publish: Callable[[Message], object] | None = None  # the router's, once attached
        self.adopt: Callable[[str, str], bool] | None = None  # (client id, dead owner)
        self._renew = link.script(scripts.RENEW)
        self._take_will = link.script(scripts.TAKE_WILL)
        self._greenlets: list[gevent.Greenlet[..., None]] = []
        self.reaped = 0

    def join(self) -> None:
        keys = self.keys
        self.link.call("SET", keys.alive(self.owner), "1", "PX", self.lease_ms)
        self.link.call("HSET", keys.nodes, self.owner, "up")
        prefix = self.node_id + "."
        for owner in self.others():
            if owner.startswith(prefix):  # this node's earlier life: dead by definition
                self.reap(owner)
        self._greenlets = [gevent.spawn(self._renew_forever), gevent.spawn(self._watch)]

    def leave(self) -> None:
        """A graceful stop: the lease goes now, so the others reap at once."""
        gevent.killall(self._greenlets)
        with contextlib.suppress(RedisUnavailable):
            self.link.call("DEL", self.keys.alive(self.owner))

    def others(self) -> list[str]:
        return [o.decode() for o in self.link.call("HKEYS", self.keys.nodes)
                if o.decode() != self.owner]

    def _renew_forever(self) -> None:
        keys = self.keys
        while True:
            gevent.sleep(self.lease_ms / 4000)
            try:
                alive = self._renew([keys.alive(self.owner), keys.reaping(self.owner),
                                     keys.nodes], [self.lease_ms, self.owner])
            except RedisUnavailable:
                continue
            if not alive:
                log.critical("cluster: this node (%s) was declared dead by another node (its "
                             "lease ran out); stopping, so that it restarts as a new one",
                             self.owner)
                os.kill(os.getpid(), signal.SIGTERM)
                return

    def _watch(self) -> None:
        while True:
            gevent.sleep(CHECK_INTERVAL)
            try:
                others = self.others()
                if not others:
                    continue
                alive = self.link.pipeline([("EXISTS", self.keys.alive(o)) for o in others])
                for owner, exists in zip(others, alive, strict=True):
                    if exists == 0:
                        self.reap(owner)
            except RedisUnavailable:
                continue
            except Exception:
                log.exception("cluster: watching the other nodes failed")

    def reap(self, dead: str) -> None:
        keys = self.keys
        link = self.link
        if not link.call("SET", keys.reaping(dead), self.owner, "NX", "PX", REAP_LOCK_MS):
            return  # another node reaps it
        log.warning("cluster: node %s is gone (no lease); publishing its clients' wills", dead)
        wills = 0
        for client_id in link.call("HKEYS", keys.wills(dead)):
            cid = client_id.decode()
            blob = self._take_will([keys.wills(dead), keys.session(cid)], [cid, dead])
            if blob:
                record = decode_record(blob)
                if isinstance(record, MessageStored) and self.publish is not None:
                    self.publish(wire.message_from(record))
                    wills += 1
        adopted = 0
        if self.adopt is not None:
            for client_id in link.call("SMEMBERS", keys.sessions(dead)):
                adopted += self.adopt(client_id.decode(), dead)
        link.call("DEL", keys.routes(dead), keys.wills(dead), keys.sessions(dead))
        link.call("PUBLISH", keys.routes_changes, b"*" + dead.encode())
        link.call("HDEL", keys.nodes, dead)
        self.routes.drop_owner(dead)
        self.reaped += 1
        log.warning("cluster: node %s reaped: %d will(s) published, %d offline session(s) "
                    "adopted", dead, wills, adopted)

"""Where a cluster keeps what in Redis: every key and channel name, in one place.

Session keys carry the hash tag `{c:<client id>}`, node keys `{n:<owner>}`, so the layout
would work unchanged on Redis Cluster (a session's keys in one slot, its scripts atomic).
An owner is a node incarnation, `<node_id>.<n>`: a restarted node never mistakes its previous
life's messages, routes or wills for its own.
"""

from __future__ import annotations


class Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes = f"{prefix}nodes"  # hash owner -> "<started_at>"
        self.message_ids = f"{prefix}msgid"  # counter: blocks of message ids per node
        self.psubs = f"{prefix}psubs"  # hash "<cid>\0<filter>" -> Subscribed record
        self.psubs_changes = f"{prefix}psubs:chg"  # channel
        self.routes_changes = f"{prefix}routes:chg"  # channel
        self.retained = f"{prefix}ret"  # hash topic -> MessageStored record
        self.retained_changes = f"{prefix}ret:chg"  # channel

    # -- one session ---------------------------------------------------------------------------

    def session(self, client_id: str) -> str:
        """Hash: owner, epoch (the fencing token), p (1: persistent), seq (last position)."""
        return f"{self.prefix}{{c:{client_id}}}:s"

    def log(self, client_id: str) -> str:
        """List: the session's records, `<pos>:<O|F><record>` (owner-written or appended by
        a publisher on another node); position 0 for a compacted base."""
        return f"{self.prefix}{{c:{client_id}}}:log"

    def filters(self, client_id: str) -> str:
        """Set: the session's filters (what to take out of `psubs` when it ends)."""
        return f"{self.prefix}{{c:{client_id}}}:f"

    def session_keys(self, client_id: str) -> list[str]:
        return [self.session(client_id), self.log(client_id), self.filters(client_id),
                self.psubs]

    # -- one node incarnation ------------------------------------------------------------------

    def incarnation(self, node_id: str) -> str:
        return f"{self.prefix}node:{node_id}:inc"

    def alive(self, owner: str) -> str:
        return f"{self.prefix}{{n:{owner}}}:alive"  # string with the lease as its TTL

    def routes(self, owner: str) -> str:
        return f"{self.prefix}{{n:{owner}}}:routes"  # hash filter -> 1

    def wills(self, owner: str) -> str:
        return f"{self.prefix}{{n:{owner}}}:wills"  # hash cid -> "<epoch>:<MessageStored>"

    def sessions(self, owner: str) -> str:
        return f"{self.prefix}{{n:{owner}}}:sess"  # set: persistent sessions it has held

    def stats(self, owner: str) -> str:
        return f"{self.prefix}{{n:{owner}}}:stats"  # hash counter -> value

    def reaping(self, owner: str) -> str:
        return f"{self.prefix}reap:{{n:{owner}}}"  # who reaps a dead owner (SET NX PX)

    def push(self, owner: str) -> bytes:
        """Channel: forwarded publishes and queue notifications for one owner."""
        return f"{self.prefix}{{n:{owner}}}:push".encode()

    def control(self, owner: str) -> bytes:
        """Channel: "give up this session" to one owner."""
        return f"{self.prefix}{{n:{owner}}}:ctl".encode()

"""`ClusterHooks`: what the state machine asks of a cluster node, when there is one.

Core declares it and never imports the cluster (`broker/cluster/` implements it, the
composition root sets it on the router); on a single node it is None and costs one attribute
test per publish.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..errors import ReasonCode
from .message import Message


class ClusterHooks(Protocol):
    def claim(self, client_id: str, clean_start: bool, persistent: bool,
              will: Message | None) -> ReasonCode | None:
        """Make this node the owner of `client_id`'s session before its CONNACK: fenced in
        Redis, a live connection elsewhere told to go, the stored session loaded into the
        registry. Blocks the calling greenlet only. None when done, else the refusal."""
        ...

    def forward(self, message: Message) -> int:
        """Send a message published on this node to the other nodes: appended to the queues
        of persistent sessions they own (durable before the publisher's acknowledgement),
        and once to each node with a live subscriber. Returns how many it reached."""
        ...

    def shared_groups(self, message: Message) -> Callable[[str], bool] | None:
        """Which shared groups this node serves for `message` (by `$share/group/filter`):
        each group's message goes to one node, the same choice on every node. None: all."""
        ...

    def retained_barrier(self) -> None:
        """Return once every retained change acknowledged anywhere before the call is in
        this node's retained store (a SUBSCRIBE's retained messages are then current)."""
        ...

    def connection_closed(self, client_id: str) -> None:
        """A connection of this node ended: its will is no longer the cluster's to send."""
        ...

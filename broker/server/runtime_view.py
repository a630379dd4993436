"""`Runtime`: what the operator endpoints (metrics, health, admin API, status page) read of the
running broker. `server.root.Broker` is one; naming the attributes here keeps the HTTP side
from importing the composition root (which imports it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..core.context import BrokerContext
from ..link.connection import Connection
from ..store.base import SessionStore
from .bridges import Bridges
from .listeners import Listener
from .login_throttle import LoginThrottle


class Runtime(Protocol):
    ctx: BrokerContext
    store: SessionStore
    listeners: Sequence[Listener]  # the MQTT (tcp, websockets) listeners
    connections: set[Connection]
    failures: LoginThrottle  # failed logins per address, MQTT and HTTP alike
    stopping: bool
    bridges: Bridges  # the [[bridge]]s running now (reload replaces them in place)

    def cluster_metrics(self) -> dict[str, tuple[str, float]]:
        """name -> (help, value) of the cluster's figures; empty on a single node."""
        ...

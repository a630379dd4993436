"""`BrokerContext`: the shared broker state every connection's protocol works against.

Built once by `server.Broker` (the composition root) and passed down; there are no globals.
`config` is replaced as a whole on reload, so readers take `ctx.config` each time they need it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config.schema import Config
from ..store.base import SessionStore
from .disconnect_watch import DisconnectWatch
from .drop_log import DropLog
from .held_wills import HeldWills
from .registry import SessionRegistry
from .retained import RetainedMessages
from .router import Router
from .session import SessionEnv
from .stats import Stats
from .topic_tree import TopicTree


@dataclass(slots=True)
class BrokerContext:
    config: Config
    stats: Stats
    store: SessionStore
    tree: TopicTree
    retained: RetainedMessages
    registry: SessionRegistry
    router: Router
    env: SessionEnv
    disconnects: DisconnectWatch = field(default_factory=DisconnectWatch)
    wills: HeldWills = field(default_factory=HeldWills)

    @classmethod
    def build(cls, config: Config, store: SessionStore) -> BrokerContext:
        stats = Stats()
        tree = TopicTree()
        retained = RetainedMessages()
        env = SessionEnv(store, stats, config.limits, DropLog(config.log.drop_log_interval))
        registry = SessionRegistry(env, tree)
        router = Router(tree, retained, registry, store, stats)
        return cls(config, stats, store, tree, retained, registry, router, env)

    def reconfigure(self, config: Config) -> None:
        """Apply a reloaded configuration to everything that reads it live."""
        self.config = config
        self.env.limits = config.limits
        self.env.drops.interval = config.log.drop_log_interval

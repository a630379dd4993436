"""Several greenfly nodes on one Redis, each a real broker subprocess (tests/support/broker.py)
with a `[cluster]` section: the nodes of a test share a key prefix of their own, so tests
running in parallel on one redis-server never see each other's keys."""

from __future__ import annotations

import uuid
from pathlib import Path

from .broker import BrokerProcess
from .redis import RedisServer


def cluster_section(redis: RedisServer, node_id: str, prefix: str, lease_ms: int) -> str:
    return (f'[cluster]\nnode_id = "{node_id}"\nredis_url = "{redis.url}"\n'
            f'key_prefix = "{prefix}"\nlease_ms = {lease_ms}\n')


class Cluster:
    def __init__(self, workdir: Path, redis: RedisServer, nodes: int = 3, *,
                 lease_ms: int = 2000, websockets: bool = False, extra: str = "",
                 sys_interval: int = 0) -> None:
        self.redis = redis
        self.prefix = f"gf{uuid.uuid4().hex[:6]}:"
        self.nodes = [BrokerProcess(workdir / f"n{i}",
                                    extra + "\n" + cluster_section(redis, f"n{i}", self.prefix,
                                                                   lease_ms),
                                    websockets=websockets, sys_interval=sys_interval)
                      for i in range(1, nodes + 1)]

    def start(self) -> Cluster:
        for node in self.nodes:
            node.start()
        return self

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.stop()

    def __getitem__(self, index: int) -> BrokerProcess:
        return self.nodes[index]

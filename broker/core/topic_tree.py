"""`TopicTree`: the subscription trie, with `$share` groups and a per-topic match cache.

Invariants:
- `match(topic)` returns a snapshot: a tuple of (client id, QoS) with one entry per client,
  at the highest QoS of all its matching subscriptions (overlapping subscriptions deliver one
  copy), plus one member per matching shared group, chosen round-robin. Immutable, so the
  cached answer itself can be handed out.
- Results for ordinary subscriptions are cached per topic name; any subscribe or unsubscribe
  clears the cache, so a cached answer is never stale. Fan-in to a few topics is then a dict
  lookup instead of a walk.
- The lock is held only for pure dict work: nothing in here yields. A cache hit is read
  without it: one dict lookup cannot be interleaved with anything (one OS thread, no yield),
  and every change happens under the lock and clears the cache.
"""

from __future__ import annotations

from gevent.lock import Semaphore

from ..topics import parse_shared

_CACHE_LIMIT = 65_536


class _Node:
    __slots__ = ("children", "subscribers", "shared")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.subscribers: dict[str, int] = {}  # client id -> granted QoS
        self.shared: dict[str, _SharedGroup] = {}


class _SharedGroup:
    __slots__ = ("members", "turn")

    def __init__(self) -> None:
        self.members: dict[str, int] = {}
        self.turn = 0

    def pick(self) -> tuple[str, int]:
        items = list(self.members.items())
        self.turn = (self.turn + 1) % len(items)
        return items[self.turn]


class TopicTree:
    def __init__(self) -> None:
        self._root = _Node()
        self._lock = Semaphore()
        self._cache: dict[str, tuple[tuple[tuple[str, int], ...], list[_SharedGroup]]] = {}
        self._count = 0
        self._shared_count = 0

    @property
    def count(self) -> int:
        """Number of (client, filter) subscriptions, shared ones included."""
        return self._count

    @property
    def shared_count(self) -> int:
        """Number of (client, `$share/...` filter) subscriptions."""
        return self._shared_count

    def subscribe(self, client_id: str, topic_filter: str, qos: int) -> bool:
        """Add or replace a subscription; True when it replaced an existing one."""
        shared = parse_shared(topic_filter)
        path = shared[1] if shared else topic_filter
        with self._lock:
            node = self._root
            for level in path.split("/"):
                child = node.children.get(level)
                if child is None:
                    child = node.children[level] = _Node()
                node = child
            if shared:
                members = node.shared.setdefault(shared[0], _SharedGroup()).members
            else:
                members = node.subscribers
            existed = client_id in members
            members[client_id] = qos
            if not existed:
                self._count += 1
                self._shared_count += 1 if shared else 0
            self._cache.clear()
            return existed

    def unsubscribe(self, client_id: str, topic_filter: str) -> bool:
        """Remove a subscription; True when it existed. Empty branches are pruned."""
        shared = parse_shared(topic_filter)
        path = shared[1] if shared else topic_filter
        with self._lock:
            trail = [self._root]
            for level in path.split("/"):
                child = trail[-1].children.get(level)
                if child is None:
                    return False
                trail.append(child)
            node = trail[-1]
            if shared:
                group = node.shared.get(shared[0])
                if group is None or group.members.pop(client_id, None) is None:
                    return False
                if not group.members:
                    del node.shared[shared[0]]
            elif node.subscribers.pop(client_id, None) is None:
                return False
            self._count -= 1
            self._shared_count -= 1 if shared else 0
            self._cache.clear()
            levels = path.split("/")
            for depth in range(len(levels), 0, -1):
                node = trail[depth]
                if node.children or node.subscribers or node.shared:
                    break
                del trail[depth - 1].children[levels[depth - 1]]
            return True

    def match(self, topic: str) -> tuple[tuple[str, int], ...]:
        """Who receives a message published to `topic`, and at which (maximum) QoS."""
        cached = self._cache.get(topic)
        if cached is not None and not cached[1]:
            return cached[0]  # the hot path: fan-in to a known topic
        with self._lock:
            cached = self._cache.get(topic)
            if cached is None:
                cached = self._walk(topic)
                if len(self._cache) >= _CACHE_LIMIT:
                    self._cache.clear()
                self._cache[topic] = cached
            plain, groups = cached
            if not groups:
                return plain
            result = dict(plain)
            for group in groups:
                if group.members:
                    client_id, qos = group.pick()
                    if result.get(client_id, -1) < qos:
                        result[client_id] = qos
            return tuple(result.items())

    def _walk(self, topic: str) -> tuple[tuple[tuple[str, int], ...], list[_SharedGroup]]:
        levels = topic.split("/")
        n = len(levels)
        found: dict[str, int] = {}
        groups: list[_SharedGroup] = []

        def take(node: _Node) -> None:
            for client_id, qos in node.subscribers.items():
                if found.get(client_id, -1) < qos:
                    found[client_id] = qos
            if node.shared:
                groups.extend(node.shared.values())

        dollar = topic.startswith("$")
        stack = [(self._root, 0)]
        while stack:
            node, i = stack.pop()
            children = node.children
            if not children:
                if i == n:
                    take(node)
                continue
            wild = not (dollar and i == 0)  # [MQTT-4.7.2-1]
            if wild:
                hash_node = children.get("#")
                if hash_node is not None:
                    take(hash_node)  # also covers "a/#" matching "a" when i == n
            if i == n:
                take(node)
                continue
            if wild:
                plus = children.get("+")
                if plus is not None:
                    stack.append((plus, i + 1))
            exact = children.get(levels[i])
            if exact is not None:
                stack.append((exact, i + 1))
        return tuple(found.items()), groups

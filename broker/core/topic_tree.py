"""`TopicTree`: the subscription trie, with `$share` groups and a per-topic match cache.

Invariants:
- `match(topic)` returns a snapshot: a tuple of (client id, QoS, options) with one entry per
  client, at the highest QoS of all its matching subscriptions (overlapping subscriptions
  deliver one copy), plus one member per matching shared group. Immutable, so the cached
  answer itself can be handed out.
- `options` is None when none of the client's matching subscriptions has an MQTT 5 option
  that changes a delivery (no local, retain as published, a subscription identifier): every
  3.1.1 subscription and most 5.0 ones, the router's cheap case. Otherwise it is a
  `MatchOptions` that merges them: one delivery carries every matching identifier
  [MQTT-3.3.4-4], and keeps the publish's retain flag if any of them retains as published.
- A shared group's member is picked round-robin, preferring members whose client is online
  (`online`): a message for the group is not queued for an offline member while another
  one could take it now. Only when every member is offline does the next one in turn get it
  (queued if its session is persistent).
- Results for ordinary subscriptions are cached per topic name; any subscribe or unsubscribe
  clears the cache, so a cached answer is never stale. Fan-in to a few topics is then a dict
  lookup instead of a walk.
- The lock is held only for pure dict work: nothing in here yields. A cache hit is read
  without it: one dict lookup cannot be interleaved with anything (one OS thread, no yield),
  and every change happens under the lock and clears the cache.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from gevent.lock import Semaphore

from ..topics import parse_shared

_CACHE_LIMIT = 65_536

Online = Callable[[str], bool]
Target = tuple[str, int, "MatchOptions | None"]


class Subscription:
    """One client's subscription with MQTT 5 options, as the tree keeps it (a subscription
    without any is just its QoS)."""

    __slots__ = ("qos", "no_local", "retain_as_published", "identifier")

    def __init__(self, qos: int, no_local: bool = False, retain_as_published: bool = False,
                 identifier: int = 0) -> None:
        self.qos = qos
        self.no_local = no_local
        self.retain_as_published = retain_as_published
        self.identifier = identifier  # 0: none

    @property
    def plain(self) -> bool:
        return not (self.no_local or self.retain_as_published or self.identifier)


class MatchOptions:
    """What one client's matching subscriptions ask of a delivery beyond its QoS.

    `no_local`: one of them has no local, so a message the client published itself is
    delivered as `own` says, the merge of only the others [MQTT-3.8.3-3], or not at all when
    `own` is None."""

    __slots__ = ("qos", "retain_as_published", "identifiers", "no_local", "own")

    def __init__(self, qos: int, retain_as_published: bool, identifiers: tuple[int, ...],
                 no_local: bool = False, own: MatchOptions | None = None) -> None:
        self.qos = qos
        self.retain_as_published = retain_as_published
        self.identifiers = identifiers
        self.no_local = no_local
        self.own = own

    def __repr__(self) -> str:
        return (f"MatchOptions(qos={self.qos}, rap={self.retain_as_published}, "
                f"ids={self.identifiers}, no_local={self.no_local}, own={self.own!r})")


def merge(subscriptions: Iterable[Subscription]) -> tuple[int, MatchOptions | None]:
    """One client's matching subscriptions -> the QoS and options of its one delivery."""
    subs = list(subscriptions)
    qos = max(sub.qos for sub in subs)
    if all(sub.plain for sub in subs):
        return qos, None
    options = _options(subs)
    if any(sub.no_local for sub in subs):
        rest = [sub for sub in subs if not sub.no_local]
        options.no_local = True
        options.own = _options(rest) if rest else None
    return qos, options


def _options(subs: list[Subscription]) -> MatchOptions:
    return MatchOptions(max(sub.qos for sub in subs),
                        any(sub.retain_as_published for sub in subs),
                        tuple(sorted({sub.identifier for sub in subs if sub.identifier})))


class _Node:
    __slots__ = ("children", "subscribers", "optioned", "shared")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.subscribers: dict[str, int] = {}  # client id -> granted QoS (no options)
        self.optioned: dict[str, Subscription] | None = None  # the others, made when needed
        self.shared: dict[str, _SharedGroup] = {}


class _SharedGroup:
    __slots__ = ("members", "turn", "key")

    def __init__(self, key: str) -> None:
        self.members: dict[str, Subscription] = {}
        self.turn = 0
        self.key = key  # the `$share/group/filter` it was subscribed as

    def pick(self, online: Online | None,
             skip: str = "") -> tuple[str, Subscription] | None:
        """The next member in turn, online first; never `skip`; None if there is nobody."""
        items = [item for item in self.members.items() if item[0] != skip] if skip \
            else list(self.members.items())
        if not items:
            return None
        n = len(items)
        start = (self.turn + 1) % n
        if online is not None:
            for step in range(n):
                index = (start + step) % n
                if online(items[index][0]):
                    self.turn = index
                    return items[index]
        self.turn = start
        return items[start]


# A cached walk: the answer without shared groups, the groups, and every matching
# subscription per client (only kept when there are groups, to merge a pick with).
_Walk = tuple[tuple[Target, ...], list[_SharedGroup], dict[str, list[Subscription]]]


class TopicTree:
    def __init__(self) -> None:
        self._root = _Node()
        self._lock = Semaphore()
        self._cache: dict[str, _Walk] = {}
        self._count = 0
        self._shared_count = 0
        # (filter, +1 or -1) for each (client, filter) subscription added or removed, after
        # the change: a cluster node counts its filters for the other nodes' routes.
        self.observer: Callable[[str, int], None] | None = None

    @property
    def count(self) -> int:
        """Number of (client, filter) subscriptions, shared ones included."""
        return self._count

    @property
    def shared_count(self) -> int:
        """Number of (client, `$share/...` filter) subscriptions."""
        return self._shared_count

    def subscribe(self, client_id: str, topic_filter: str, qos: int, no_local: bool = False,
                  retain_as_published: bool = False, identifier: int = 0) -> bool:
        """Add or replace a subscription; True when it replaced an existing one."""
        shared = parse_shared(topic_filter)
        path = shared[1] if shared else topic_filter
        sub = Subscription(qos, no_local, retain_as_published, identifier)
        with self._lock:
            node = self._root
            for level in path.split("/"):
                child = node.children.get(level)
                if child is None:
                    child = node.children[level] = _Node()
                node = child
            if shared:
                group = node.shared.get(shared[0])
                if group is None:
                    group = node.shared[shared[0]] = _SharedGroup(topic_filter)
                members = group.members
                existed = client_id in members
                members[client_id] = sub
            else:
                optioned = node.optioned
                existed = (node.subscribers.pop(client_id, None) is not None
                           or (optioned is not None and optioned.pop(client_id, None) is not None))
                if sub.plain:
                    node.subscribers[client_id] = qos
                else:
                    if optioned is None:
                        optioned = node.optioned = {}
                    optioned[client_id] = sub
            if not existed:
                self._count += 1
                self._shared_count += 1 if shared else 0
            self._cache.clear()
        if not existed and self.observer is not None:
            self.observer(topic_filter, 1)
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
                if node.optioned is None or node.optioned.pop(client_id, None) is None:
                    return False
                if not node.optioned:
                    node.optioned = None
            self._count -= 1
            self._shared_count -= 1 if shared else 0
            self._cache.clear()
            levels = path.split("/")
            for depth in range(len(levels), 0, -1):
                node = trail[depth]
                if node.children or node.subscribers or node.shared or node.optioned:
                    break
                del trail[depth - 1].children[levels[depth - 1]]
        if self.observer is not None:
            self.observer(topic_filter, -1)
        return True

    def match(self, topic: str, online: Online | None = None,
              serves: Callable[[str], bool] | None = None) -> tuple[Target, ...]:
        """Who receives a message published to `topic`: (client id, maximum QoS, options).
        `serves`: which shared groups (by `$share/group/filter`) pick a member here; in a
        cluster each message's group is served by one node only."""
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
            targets, groups, found = cached
            if not groups:
                return targets
            picks: dict[str, list[Subscription]] = {}
            for group in groups:
                if serves is not None and not serves(group.key):
                    continue
                picked = group.pick(online)
                if picked is not None:
                    picks.setdefault(picked[0], []).append(picked[1])
            result = [target for target in targets if target[0] not in picks]
            for client_id, subs in picks.items():
                qos, options = merge([*found.get(client_id, ()), *subs])
                result.append((client_id, qos, options))
            return tuple(result)

    def pick_member(self, topic_filter: str, online: Online | None = None,
                    skip: str = "") -> Target | None:
        """The next member (never `skip`) of the shared group `$share/group/filter`, as
        `match` would pick it, with its QoS and options; None when it has no other member."""
        with self._lock:
            group = self._group(topic_filter)
            picked = group.pick(online, skip) if group is not None else None
            if picked is None:
                return None
            qos, options = merge([picked[1]])
            return picked[0], qos, options

    def has_member(self, topic_filter: str, skip: str = "") -> bool:
        """True when the shared group `$share/group/filter` has a member other than `skip`."""
        with self._lock:
            group = self._group(topic_filter)
            return group is not None and any(member != skip for member in group.members)

    def _group(self, topic_filter: str) -> _SharedGroup | None:
        shared = parse_shared(topic_filter)
        if shared is None:
            raise ValueError(f"not a shared subscription: {topic_filter!r}")
        node = self._root
        for level in shared[1].split("/"):
            child = node.children.get(level)
            if child is None:
                return None
            node = child
        return node.shared.get(shared[0])

    def _walk(self, topic: str) -> _Walk:
        levels = topic.split("/")
        n = len(levels)
        found: dict[str, int] = {}
        optioned: dict[str, list[Subscription]] = {}
        groups: list[_SharedGroup] = []

        def take(node: _Node) -> None:
            for client_id, qos in node.subscribers.items():
                if found.get(client_id, -1) < qos:
                    found[client_id] = qos
            if node.optioned:
                for client_id, sub in node.optioned.items():
                    optioned.setdefault(client_id, []).append(sub)
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
        return _assemble(found, optioned, groups)


def _assemble(found: dict[str, int], optioned: dict[str, list[Subscription]],
              groups: list[_SharedGroup]) -> _Walk:
    """A walk's findings as `match` answers them: plain clients stay (id, QoS, None)."""
    targets: list[Target] = []
    for client_id, subs in optioned.items():
        plain_qos = found.pop(client_id, None)
        if plain_qos is not None:
            subs.append(Subscription(plain_qos))
        qos, options = merge(subs)
        targets.append((client_id, qos, options))
    everyone: dict[str, list[Subscription]] = {}
    if groups:  # what a shared pick merges with
        everyone = {client_id: [Subscription(qos)] for client_id, qos in found.items()}
        everyone.update(optioned)
    plain: list[Target] = [(client_id, qos, None) for client_id, qos in found.items()]
    return tuple(plain + targets), groups, everyone

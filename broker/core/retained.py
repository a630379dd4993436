"""`RetainedMessages`: the last retained message per topic, in a trie, matched by filter.

A retained PUBLISH with an empty payload clears the topic [MQTT-3.3.1-10]. `match(filter)`
returns a snapshot list; wildcards at the first level skip `$` topics [MQTT-4.7.2-1]. Nothing
in here yields, so the lock is never held across a switch.
"""

from __future__ import annotations

from gevent.lock import Semaphore

from ..topics import parse_shared
from .message import Message


class _Node:
    __slots__ = ("children", "message")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.message: Message | None = None


class RetainedMessages:
    def __init__(self) -> None:
        self._root = _Node()
        self._lock = Semaphore()
        self._count = 0

    @property
    def count(self) -> int:
        return self._count

    def set(self, message: Message) -> None:
        """Store `message` as the retained one for its topic, or clear it if it is empty."""
        if not message.payload:  # [MQTT-3.3.1-10]
            self.clear(message.topic)
            return
        with self._lock:
            node = self._root
            for level in message.topic.split("/"):
                child = node.children.get(level)
                if child is None:
                    child = node.children[level] = _Node()
                node = child
            if node.message is None:
                self._count += 1
            node.message = message

    def clear(self, topic: str) -> bool:
        with self._lock:
            levels = topic.split("/")
            trail = [self._root]
            for level in levels:
                child = trail[-1].children.get(level)
                if child is None:
                    return False
                trail.append(child)
            if trail[-1].message is None:
                return False
            trail[-1].message = None
            self._count -= 1
            for depth in range(len(levels), 0, -1):
                node = trail[depth]
                if node.children or node.message is not None:
                    break
                del trail[depth - 1].children[levels[depth - 1]]
            return True

    def get(self, topic: str) -> Message | None:
        with self._lock:
            node = self._root
            for level in topic.split("/"):
                child = node.children.get(level)
                if child is None:
                    return None
                node = child
            return node.message

    def all(self) -> list[Message]:
        with self._lock:
            out: list[Message] = []
            stack = [self._root]
            while stack:
                node = stack.pop()
                if node.message is not None:
                    out.append(node.message)
                stack.extend(node.children.values())
            return out

    def match(self, topic_filter: str) -> list[Message]:
        """Retained messages whose topics `topic_filter` matches (a shared filter's inner part)."""
        shared = parse_shared(topic_filter)
        levels = (shared[1] if shared else topic_filter).split("/")
        n = len(levels)
        out: list[Message] = []
        with self._lock:
            stack = [(self._root, 0)]
            while stack:
                node, i = stack.pop()
                if i == n:
                    if node.message is not None:
                        out.append(node.message)
                    continue
                level = levels[i]
                if level == "#":
                    if node.message is not None and i > 0:
                        out.append(node.message)  # "a/#" matches "a"
                    sub = [(c, k) for k, c in node.children.items()
                           if not (i == 0 and k.startswith("$"))]
                    while sub:
                        child, _key = sub.pop()
                        if child.message is not None:
                            out.append(child.message)
                        sub.extend((c, k) for k, c in child.children.items())
                elif level == "+":
                    for key, child in node.children.items():
                        if not (i == 0 and key.startswith("$")):
                            stack.append((child, i + 1))
                else:
                    named = node.children.get(level)
                    if named is not None:
                        stack.append((named, i + 1))
        return out

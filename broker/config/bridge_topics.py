"""A bridge's `topic` lines, in Mosquitto's grammar, and the topic mapping they define.

`pattern [[[out|in|both] qos] local-prefix remote-prefix]`, as in mosquitto.conf: the
direction defaults to out and the QoS to 0; `""` stands for an empty prefix (Mosquitto's
way of giving a remote prefix without a local one). The local subscription is
local-prefix + pattern, the remote one remote-prefix + pattern; a message crossing the bridge
has the one prefix replaced by the other. A pattern of `""` with a prefix bridges that one
topic (the prefix itself), as Mosquitto allows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import MQTTError
from ..topics import matches, validate_filter

DIRECTIONS = ("out", "in", "both")


class TopicLineError(ValueError):
    """A malformed `topic` line; `entry` is its text, so the loader can name its line."""

    def __init__(self, entry: str, message: str) -> None:
        super().__init__(message)
        self.entry = entry


@dataclass(frozen=True, slots=True)
class BridgeTopic:
    pattern: str
    direction: str = "out"
    qos: int = 0
    local_prefix: str = ""
    remote_prefix: str = ""

    @property
    def local_filter(self) -> str:
        return self.local_prefix + self.pattern

    @property
    def remote_filter(self) -> str:
        return self.remote_prefix + self.pattern

    @property
    def outgoing(self) -> bool:
        return self.direction in ("out", "both")

    @property
    def incoming(self) -> bool:
        return self.direction in ("in", "both")

    def to_remote(self, topic: str) -> str | None:
        """The remote topic for local `topic`, or None if this line does not send it."""
        if self.outgoing and matches(self.local_filter, topic):
            return self.remote_prefix + topic[len(self.local_prefix):]
        return None

    def to_local(self, topic: str) -> str | None:
        """The local topic for remote `topic`, or None if this line does not bring it in."""
        if self.incoming and matches(self.remote_filter, topic):
            return self.local_prefix + topic[len(self.remote_prefix):]
        return None

    def line(self) -> str:
        """The line as written in a configuration (for logs and `greenfly check`)."""
        def word(value: str) -> str:
            return value or '""'
        return " ".join((word(self.pattern), self.direction, str(self.qos),
                         word(self.local_prefix), word(self.remote_prefix)))


def parse_topic_line(entry: Any) -> BridgeTopic:
    if not isinstance(entry, str):
        raise TopicLineError(str(entry), f"expected a string such as \"sensors/# out 1\", got "
                             f"{entry!r}")
    words = ["" if word == '""' else word for word in entry.split()]
    if not 1 <= len(words) <= 5 or len(words) == 4:
        raise TopicLineError(entry, f"{entry!r}: expected `pattern [[[out|in|both] qos] "
                             "local-prefix remote-prefix]` (1, 2, 3 or 5 words)")
    pattern = words[0]
    direction = words[1] if len(words) > 1 else "out"
    if direction not in DIRECTIONS:
        raise TopicLineError(entry, f"{entry!r}: direction {direction!r} is not out, in or both")
    qos_word = words[2] if len(words) > 2 else "0"
    if qos_word not in ("0", "1", "2"):
        raise TopicLineError(entry, f"{entry!r}: QoS {qos_word!r} is not 0, 1 or 2")
    local_prefix, remote_prefix = (words[3], words[4]) if len(words) == 5 else ("", "")
    for name, prefix in (("local", local_prefix), ("remote", remote_prefix)):
        if "#" in prefix or "+" in prefix:
            raise TopicLineError(entry, f"{entry!r}: the {name} prefix may not hold a wildcard")
    if not pattern and not (local_prefix or remote_prefix):
        raise TopicLineError(entry, f"{entry!r}: an empty pattern needs a prefix")
    topic = BridgeTopic(pattern, direction, int(qos_word), local_prefix, remote_prefix)
    for name, topic_filter in (("local", topic.local_filter), ("remote", topic.remote_filter)):
        try:
            validate_filter(topic_filter)
        except MQTTError as exc:
            raise TopicLineError(entry, f"{entry!r}: the {name} filter {topic_filter!r} is "
                                 f"not valid: {exc}") from None
    return topic


def topic_lines(value: Any) -> tuple[BridgeTopic, ...]:
    """The `topic` key: a non-empty list of lines (one line alone is taken too)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ValueError("expected a list of topic lines such as [\"sensors/# out 1\"], got "
                         f"{value!r}")
    return tuple(parse_topic_line(item) for item in items)

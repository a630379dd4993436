"""Topic names and topic filters: validation, `$share/` parsing, and the brute-force `matches`.

Rules: names and filters are at least one character [MQTT-4.7.3-1]; a name has no wildcard
[MQTT-4.7.1-1]; `#` is alone in the last level of a filter [MQTT-4.7.1-2]; `+` fills a whole
level [MQTT-4.7.1-3]; a filter starting with a wildcard does not match a name starting with
`$` [MQTT-4.7.2-1]; `a/#` also matches `a` [MQTT-4.7.1-2]. A shared subscription is
`$share/{group}/{filter}` where the group has no `/`, `+` or `#` [MQTT-4.8.2-1] [MQTT-4.8.2-2].

`matches` is the slow, obviously-correct oracle the topic tree is tested against.
"""

from __future__ import annotations

from .errors import MalformedPacket

SHARE_PREFIX = "$share/"


def validate_topic_name(topic: str, context: str = "") -> None:
    """Raise `MalformedPacket` unless `topic` may name a topic. The one copy of the rule: the
    codec calls it for a PUBLISH topic and a will topic; `context` starts the message
    ("PUBLISH: ") so the log says where the name came from."""
    if not topic:
        raise MalformedPacket(f"{context}empty topic name [MQTT-4.7.3-1]")
    if "+" in topic or "#" in topic:
        raise MalformedPacket(f"{context}wildcard in topic name {topic!r} [MQTT-4.7.1-1]")


def validate_filter(topic_filter: str) -> None:
    """Raise `MalformedPacket` unless `topic_filter` is a well-formed (possibly shared) filter."""
    if not topic_filter:
        raise MalformedPacket("empty topic filter [MQTT-4.7.3-1]")
    shared = parse_shared(topic_filter)
    levels = (shared[1] if shared else topic_filter).split("/")
    last = len(levels) - 1
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != last):
            raise MalformedPacket(f"invalid topic filter {topic_filter!r}: '#' must be the whole "
                                  "last level [MQTT-4.7.1-2]")
        if "+" in level and level != "+":
            raise MalformedPacket(f"invalid topic filter {topic_filter!r}: '+' must be a whole "
                                  "level [MQTT-4.7.1-3]")


def parse_shared(topic_filter: str) -> tuple[str, str] | None:
    """`$share/group/filter` -> (group, filter); None for an ordinary filter."""
    if not topic_filter.startswith(SHARE_PREFIX):
        return None
    rest = topic_filter[len(SHARE_PREFIX):]
    group, sep, inner = rest.partition("/")
    if not group or not sep or not inner or "+" in group or "#" in group:  # [MQTT-4.8.2-2]
        raise MalformedPacket(f"invalid shared subscription {topic_filter!r} [MQTT-4.8.2-1]")
    return group, inner


def matches(topic_filter: str, topic: str) -> bool:
    """True when `topic_filter` (not shared) matches the topic name `topic`."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False  # [MQTT-4.7.2-1]
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    for i, f in enumerate(f_levels):
        if f == "#":
            return True
        if i >= len(t_levels):
            return False
        if f != "+" and f != t_levels[i]:
            return False
    return len(f_levels) == len(t_levels)

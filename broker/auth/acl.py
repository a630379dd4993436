"""Mosquitto's ACL file: who may publish to, subscribe to and receive which topics.

Syntax (as Mosquitto's `acl_file`):
    # comment
    topic [read|write|readwrite|deny] FILTER     # before any `user` line: anonymous clients
    user NAME
    topic [read|write|readwrite|deny] FILTER     # for NAME
    pattern [read|write|readwrite|deny] FILTER   # for everyone; %c = client id, %u = user name
The access defaults to readwrite. When a filter follows, the word before it must be an
access word (a typo is a load error naming file and line, as in Mosquitto), so a filter
containing spaces needs one: `topic readwrite my topic/#`. Rules:
- Anything not granted is denied, and a matching `deny` beats any grant.
- PUBLISH needs write access to the topic; SUBSCRIBE needs a read rule whose filter covers
  the whole subscription filter (so `#` is refused where only `sensors/#` is granted);
  every delivery needs read access to the message's topic, so a deny inside a granted
  subscription still holds.
- `%c` / `%u` are not substituted with a value containing `/`, `+` or `#` (a client id
  `a/b` must not reach `devices/a/b/...`); such a pattern grants nothing.
- `$SYS/...` is readable by everyone unless denied; nobody may publish to it (enforced for
  every client, with or without an ACL file).
This module is pure; the broker caches compiled rules per (client id, user name).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config.loading import read_text
from ..errors import ConfigError, MQTTError
from ..topics import matches, validate_filter

READ, WRITE = 1, 2
ACCESS = {"read": READ, "write": WRITE, "readwrite": READ | WRITE, "deny": 0}
SYS_PREFIX = "$SYS"
_SYS_READ = (READ, "$SYS/#")


def covers(acl_filter: str, sub_filter: str) -> bool:
    """True when every topic `sub_filter` matches is also matched by `acl_filter`."""
    acl = acl_filter.split("/")
    sub = sub_filter.split("/")
    for i, level in enumerate(acl):
        if level == "#":
            return True
        if i >= len(sub):
            return False
        if sub[i] == "#":
            return False
        if level != "+" and (sub[i] == "+" or sub[i] != level):
            return False
    return len(sub) == len(acl)


@dataclass(frozen=True, slots=True)
class Rules:
    """The compiled rules for one client: (access bits, filter) grants and deny filters."""

    grants: tuple[tuple[int, str], ...]
    denies: tuple[str, ...]

    def can_publish(self, topic: str) -> bool:
        if topic.startswith(SYS_PREFIX):
            return False
        return self._allowed(WRITE, topic)

    def can_read(self, topic: str) -> bool:
        return self._allowed(READ, topic)

    def _allowed(self, bit: int, topic: str) -> bool:
        if any(matches(f, topic) for f in self.denies):
            return False
        return any(access & bit and matches(f, topic) for access, f in self.grants)

    def can_subscribe(self, topic_filter: str) -> bool:
        if any(covers(f, topic_filter) for f in self.denies):
            return False
        return any(access & READ and covers(f, topic_filter) for access, f in self.grants)


@dataclass(slots=True)
class Acl:
    anonymous: list[tuple[int, str]] = field(default_factory=list)
    users: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    patterns: list[tuple[int, str]] = field(default_factory=list)
    source: str = ""

    def rules_for(self, client_id: str, username: str | None) -> Rules:
        """Everything that applies to this client, with patterns substituted."""
        entries = list(self.anonymous if username is None else self.users.get(username, ()))
        for access, pattern in self.patterns:
            filled = _substitute(pattern, client_id, username)
            if filled is not None:
                entries.append((access, filled))
        entries.append(_SYS_READ)
        grants = tuple((access, f) for access, f in entries if access)
        denies = tuple(f for access, f in entries if not access)
        return Rules(grants, denies)


def _substitute(pattern: str, client_id: str, username: str | None) -> str | None:
    for token, value in (("%c", client_id), ("%u", username)):
        if token in pattern:
            if value is None or not value or any(ch in value for ch in "/+#"):
                return None
            pattern = pattern.replace(token, value)
    return pattern


def parse_acl(text: str, source: str) -> Acl:
    acl = Acl(source=source)
    current: list[tuple[int, str]] = acl.anonymous
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        rest = rest.strip()
        if keyword == "user":
            if not rest:
                raise ConfigError("`user` needs a user name", file=source, line=number)
            current = acl.users.setdefault(rest, [])
            continue
        if keyword not in ("topic", "pattern"):
            raise ConfigError(f"unknown keyword {keyword!r}; expected topic, pattern or user",
                              file=source, line=number)
        access = READ | WRITE
        first, _, remainder = rest.partition(" ")
        if remainder.strip():
            # Two words or more: the first is the access, as Mosquitto reads it, so a typo
            # (`readwrit a/#`) is an error, not a grant on the topic "readwrit a/#".
            if first not in ACCESS:
                raise ConfigError(f"unknown access {first!r}; expected read, write, readwrite "
                                  "or deny (a filter with spaces needs one first)",
                                  file=source, line=number)
            access, rest = ACCESS[first], remainder.strip()
        if not rest:
            raise ConfigError(f"`{keyword}` needs a topic filter", file=source, line=number)
        check = rest.replace("%c", "c").replace("%u", "u")
        try:
            validate_filter(check)
        except MQTTError as exc:
            raise ConfigError(exc.message, file=source, line=number) from None
        (acl.patterns if keyword == "pattern" else current).append((access, rest))
    return acl


def load_acl_file(path: str) -> Acl:
    return parse_acl(read_text(path, "ACL file"), path)

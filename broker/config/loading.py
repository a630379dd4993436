"""Reading a configuration: TOML text -> a checked `Config`, or a ConfigError naming the file,
the line and the key path (`listener[1].port`, counting from 0) and what was expected.

Unknown sections and keys are errors; each key's own check comes from `schema`; rules that
span keys (listener port clashes) run on the whole result.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from typing import Any

from ..errors import ConfigError
from .bridge_topics import TopicLineError
from .schema import SECTIONS, ClusterSection, Config, ListenerSection

if sys.version_info >= (3, 11):  # noqa: UP036 - tomli stays the fallback pyproject names
    import tomllib
else:  # pragma: no cover - exercised only on Python < 3.11
    import tomli as tomllib

DEFAULT_CONFIG_TOML = """\
# greenfly's embedded default configuration (what runs when no -c FILE is given).
[broker]
data_dir = "./data"

[[listener]]
bind = "127.0.0.1"
port = 1883
protocol = "mqtt"

[[listener]]
bind = "127.0.0.1"
port = 9001
protocol = "websockets"
path = "/mqtt"

[[listener]]
bind = "127.0.0.1"
port = 8080
protocol = "http"
"""


def read_text(path: str, what: str = "file") -> str:
    """The UTF-8 text of a file the configuration names; ConfigError says what is wrong."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise ConfigError(f"cannot read the {what}: {exc.strerror}", file=path) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"the {what} is not UTF-8 (byte {exc.start})", file=path) from None


def redis_password(cluster: ClusterSection) -> str | None:
    """The Redis password from redis_password_file (whitespace stripped), None without one.

    Read when the configuration is loaded (so a bad file stops `greenfly check` and start-up)
    and again by the node when it connects; the secret never sits in the Config."""
    if cluster.redis_password_file is None:
        return None
    key = "cluster.redis_password_file"
    try:
        password = read_text(cluster.redis_password_file, "Redis password file").strip()
    except ConfigError as exc:
        raise ConfigError(exc.reason + f" ({cluster.redis_password_file})", key=key) from None
    if not password:
        raise ConfigError(f"the Redis password file {cluster.redis_password_file} is empty",
                          key=key)
    return password


def load_file(path: str) -> Config:
    return load_text(read_text(path), path)


def load_default() -> Config:
    return load_text(DEFAULT_CONFIG_TOML, "<default>")


def load_text(content: str, source: str) -> Config:
    try:
        data = tomllib.loads(content)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        line = int(match.group(1)) if match else None
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise ConfigError(f"not valid TOML: {reason}", file=source, line=line) from None
    where = _Locator(content, source)
    values: dict[str, Any] = {"source": source}
    for table, body in data.items():
        spec = SECTIONS.get(table)
        if spec is None:
            raise where.error(table, None, None, f"unknown section [{table}]; expected one of "
                              + ", ".join(f"[{name}]" for name in SECTIONS))
        attr, cls, is_array = spec
        if is_array:
            if not isinstance(body, list):
                raise where.error(table, None, None, f"expected [[{table}]] tables")
            if not body:
                raise where.error(table, None, None, f"an empty list: give at least one "
                                  f"[[{table}]] table, or leave the key out for the default")
            values[attr] = tuple(_section(cls, item, table, i, where)
                                 for i, item in enumerate(body))
        else:
            if not isinstance(body, dict):
                raise where.error(table, None, None, f"expected a [{table}] table")
            values[attr] = _section(cls, body, table, None, where)
    config = Config(**values)
    if not config.listeners:
        config = dataclasses.replace(config, listeners=(ListenerSection(),))
    _check_whole(config, where)
    return config


def _section(cls: type, body: Any, table: str, index: int | None, where: _Locator) -> Any:
    if not isinstance(body, dict):
        raise where.error(table, index, None, "expected a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in body.items():
        spec = fields.get(key)
        if spec is None:
            raise where.error(table, index, key, "unknown key; expected one of "
                              + ", ".join(sorted(fields)))
        try:
            kwargs[key] = spec.metadata["check"](value)
        except TopicLineError as exc:  # the line of that entry, not of the list's key
            line = where.line_of(table, index, key)
            raise where.error(table, index, key, str(exc),
                              where.line_of_text(exc.entry, line) or line) from None
        except ValueError as exc:
            raise where.error(table, index, key, str(exc)) from None
    check_given = getattr(cls, "check_given", None)
    problem = check_given(kwargs) if check_given is not None else None
    if problem is not None:
        raise where.error(table, index, problem[0], problem[1])
    return cls(**kwargs)


def _check_whole(config: Config, where: _Locator) -> None:
    """Rules that involve more than one key."""
    seen: dict[tuple[str, int], int] = {}
    for i, listener in enumerate(config.listeners):
        for (bind, port), j in seen.items():
            # A wildcard address (0.0.0.0, ::) takes the port on every address.
            clash = bind == listener.bind or {bind, listener.bind} & {"0.0.0.0", "::"}
            if listener.port and port == listener.port and clash:
                raise where.error("listener", i, "port", f"{listener.bind}:{listener.port} "
                                  f"clashes with listener[{j}] on {bind}:{port}")
        seen[(listener.bind, listener.port)] = i
    names: dict[str, int] = {}
    for i, bridge in enumerate(config.bridges):
        if bridge.name in names:
            raise where.error("bridge", i, "name", f"{bridge.name!r} is the name of "
                              f"bridge[{names[bridge.name]}] too")
        names[bridge.name] = i
    if config.cluster is not None:
        try:
            redis_password(config.cluster)
        except ConfigError as exc:
            raise where.error("cluster", None, "redis_password_file", exc.reason) from None


class _Locator:
    """Finds the line of a key in the file text, so that errors can name it."""

    def __init__(self, content: str, source: str) -> None:
        self.lines = content.splitlines()
        self.source = source

    def line_of(self, table: str, index: int | None, key: str | None) -> int | None:
        current, count, header_line = None, -1, None
        for number, line in enumerate(self.lines, 1):
            stripped = line.strip()
            header = re.match(r"^\[\[\s*([A-Za-z0-9_-]+)\s*\]\]|^\[\s*([A-Za-z0-9_-]+)\s*\]",
                              stripped)
            if header:
                current = header.group(1) or header.group(2)
                if current == table:
                    count = count + 1 if header.group(1) else 0
                    if index is None or count == index:
                        header_line = number
                        if key is None:
                            return number
                continue
            if (key and current == table and (index is None or count == index)
                    and re.match(rf"^\s*\"?{re.escape(key)}\"?\s*=", line)):
                return number
        if header_line is None and key:
            # Dotted keys or inline tables (`broker.sys_interval = 1`, `listener = [{...}]`):
            # the first line that assigns the key, or else the line that opens the table.
            for number, line in enumerate(self.lines, 1):
                if re.search(rf"(^|[.{{,\s]){re.escape(key)}\s*=", line):
                    return number
        if header_line is None:
            for number, line in enumerate(self.lines, 1):
                if re.match(rf"^\s*\[*\s*{re.escape(table)}\b", line):
                    return number
        return header_line

    def line_of_text(self, text: str, start: int | None) -> int | None:
        """The first line from `start` on that holds `text` (an entry of a list)."""
        for number, line in enumerate(self.lines[(start or 1) - 1:], start or 1):
            if text and text in line:
                return number
        return None

    def error(self, table: str, index: int | None, key: str | None, message: str,
              line: int | None = None) -> ConfigError:
        path = table if index is None else f"{table}[{index}]"
        if key:
            path += f".{key}"
        return ConfigError(message, file=self.source,
                           line=line or self.line_of(table, index, key), key=path)

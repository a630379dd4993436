"""Configuration: one TOML file -> frozen dataclasses.

Rules:
- Defaults live in the dataclasses below and nowhere else; `DEFAULT_CONFIG_TOML` is the embedded
  configuration used when no file is given (and `load_text` of it must equal those defaults
  apart from the listeners it declares).
- Every key is checked by the `check` in its field's metadata; unknown sections and keys are
  errors. Every error names the file, the line and the key path (`listener[1].port`, counting
  from 0) and says what was expected, so a bad file stops start-up with a clear message.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

if sys.version_info >= (3, 11):  # noqa: UP036 - tomli stays the fallback pyproject names
    import tomllib
else:  # pragma: no cover - exercised only on Python < 3.11
    import tomli as tomllib

Check = Callable[[Any], Any]


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def integer(lo: int, hi: int) -> Check:
    def check(value: Any) -> int:
        if type(value) is not int or not lo <= value <= hi:
            raise ValueError(f"expected an integer in {lo}..{hi}, got {_describe(value)}")
        return value
    return check


def number(lo: float, hi: float) -> Check:
    def check(value: Any) -> float:
        if type(value) not in (int, float) or not lo <= value <= hi:
            raise ValueError(f"expected a number in {lo}..{hi}, got {_describe(value)}")
        return float(value)
    return check


def boolean(value: Any) -> bool:
    if type(value) is not bool:
        raise ValueError(f"expected true or false, got {_describe(value)}")
    return value


def text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {_describe(value)}")
    return value


def choice(*options: str) -> Check:
    def check(value: Any) -> str:
        if value not in options:
            raise ValueError(f"expected one of {', '.join(map(repr, options))}, "
                             f"got {_describe(value)}")
        return value
    return check


def option(check: Check, default: Any, doc: str) -> Any:
    """A config key: its check, its default, and one line saying what it does."""
    return field(default=default, metadata={"check": check, "doc": doc})


@dataclass(frozen=True, slots=True)
class BrokerSection:
    data_dir: str = option(text, "./data", "where the session store lives")
    sys_interval: int = option(integer(0, 86_400), 10,
                               "seconds between $SYS/broker/... updates; 0 disables them")
    connect_timeout: float = option(number(0.1, 3600), 10.0,
                                    "seconds a new socket has to complete CONNECT")
    allow_anonymous: bool | None = option(
        boolean, None, "accept clients without a user name; when not set: true only if every "
        "listener binds to a loopback address")
    password_file: str | None = option(
        text, None, "Mosquitto-format password file (user:$7$...); clients must then log in "
        "unless anonymous clients are allowed")
    acl_file: str | None = option(text, None, "Mosquitto-format ACL file; when set, anything "
                                  "it does not grant is denied")
    persistent_client_expiration: int = option(
        integer(0, 2**31), 0, "seconds after disconnect when a persistent session is "
        "discarded; 0 keeps it forever")


@dataclass(frozen=True, slots=True)
class LimitsSection:
    max_keepalive: int = option(integer(0, 65_535), 65_535,
                                "largest keepalive a client may ask for (0 = no limit)")
    max_inflight_messages: int = option(integer(0, 65_535), 20,
                                        "QoS 1/2 messages in flight per client (0 = no limit)")
    max_queued_messages: int = option(integer(0, 2**31), 1000,
                                      "QoS 1/2 messages queued per client beyond those in flight "
                                      "(0 = no limit)")
    max_queued_bytes: int = option(integer(0, 2**62), 0,
                                   "payload bytes queued per client (0 = no limit)")
    max_packet_size: int = option(integer(20, 268_435_460), 268_435_455,
                                  "largest packet accepted, header included")


@dataclass(frozen=True, slots=True)
class PersistenceSection:
    enabled: bool = option(boolean, True, "keep sessions and retained messages in the journal "
                           "in data_dir (false: in memory only)")
    fsync: str = option(choice("always", "interval", "never"), "always",
                        "always: acknowledge only what is on disk; interval: fsync every "
                        "fsync_interval_ms; never: leave it to the OS")
    fsync_interval_ms: int = option(integer(1, 3_600_000), 1000,
                                    "milliseconds between fsyncs with fsync = \"interval\"")
    compact_min_mb: int = option(integer(1, 1_048_576), 64,
                                 "the journal is never compacted below this size (MiB)")
    compact_factor: float = option(number(1.5, 1000), 4.0,
                                   "compact when the journal is this many times its last "
                                   "compacted size")


def url_paths(value: Any) -> tuple[str, ...]:
    """A URL path or a list of them, each starting with '/': normalised to a tuple."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(
            isinstance(item, str) and item.startswith("/") and " " not in item
            and "?" not in item for item in items):
        raise ValueError("expected a URL path such as \"/mqtt\" (starting with '/', no query) "
                         f"or a non-empty list of them, got {_describe(value)}")
    return tuple(items)


def addresses(value: Any) -> tuple[str, ...]:
    """A list of IP addresses or networks ("127.0.0.1", "::1", "10.0.0.0/8")."""
    if not isinstance(value, list):
        raise ValueError(f"expected a list of IP addresses or networks, got {_describe(value)}")
    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except (TypeError, ValueError):
            raise ValueError("expected a list of IP addresses or networks (such as "
                             f"\"127.0.0.1\" or \"10.0.0.0/8\"), got {_describe(item)} in it"
                             ) from None
    return tuple(value)


@dataclass(frozen=True, slots=True)
class ListenerSection:
    bind: str = option(text, "127.0.0.1", "address to listen on")
    port: int = option(integer(0, 65_535), 1883, "TCP port (0 picks a free one)")
    protocol: str = option(choice("mqtt", "websockets"), "mqtt",
                           "mqtt (plain TCP) or websockets (MQTT over WebSocket, binary frames)")
    path: tuple[str, ...] = option(url_paths, ("/mqtt",),
                                   "websockets only: the URL path, or a list of paths, that "
                                   "upgrade; any other path gets HTTP 404")
    trusted_proxies: tuple[str, ...] = option(
        addresses, ("127.0.0.1", "::1"), "websockets only: peers (addresses or networks) whose "
        "X-Forwarded-For / X-Real-IP header names the client in logs")
    allow_anonymous: bool | None = option(boolean, None, "overrides [broker] allow_anonymous "
                                          "for this listener")
    password_file: str | None = option(text, None, "overrides [broker] password_file for "
                                       "this listener")
    acl_file: str | None = option(text, None, "overrides [broker] acl_file for this listener")
    max_connections: int = option(integer(0, 10_000_000), 0,
                                  "connections this listener accepts at once (0 = no limit)")
    certfile: str | None = option(text, None, "TLS: server certificate chain (PEM); with "
                                  "keyfile, makes this listener mqtts:// or wss://")
    keyfile: str | None = option(text, None, "TLS: private key of certfile (PEM)")
    cafile: str | None = option(text, None, "TLS: CA certificates that sign client "
                                "certificates (PEM)")
    require_certificate: bool = option(boolean, False, "TLS: clients must present a "
                                       "certificate signed by cafile")
    use_identity_as_username: bool = option(boolean, False, "TLS: the client certificate's "
                                            "common name is the user name (no password)")
    tls_version: str = option(choice("tlsv1.2", "tlsv1.3"), "tlsv1.2",
                              "TLS: the lowest protocol version accepted")

    @property
    def tls(self) -> bool:
        return self.certfile is not None

    @staticmethod
    def check_given(values: dict[str, Any]) -> tuple[str, str] | None:
        """(key, message) when keys given together do not fit; None when they do."""
        if values.get("protocol", "mqtt") == "mqtt":
            for key in ("path", "trusted_proxies"):
                if key in values:
                    return key, ('only a websockets listener has this key; add '
                                 'protocol = "websockets" or remove it')
        if ("certfile" in values) != ("keyfile" in values):
            missing = "keyfile" if "certfile" in values else "certfile"
            return missing, "TLS needs both certfile and keyfile"
        tls_only = ("cafile", "require_certificate", "use_identity_as_username", "tls_version")
        for key in tls_only:
            if key in values and "certfile" not in values:
                return key, "a TLS key: this listener has no certfile/keyfile"
        if values.get("require_certificate") and "cafile" not in values:
            return "require_certificate", "needs cafile (the CA that signs client certificates)"
        if values.get("use_identity_as_username") and not values.get("require_certificate"):
            return "use_identity_as_username", "needs require_certificate = true"
        return None


@dataclass(frozen=True, slots=True)
class LogSection:
    level: str = option(choice("debug", "info", "warning", "error"), "info",
                        "log level: debug, info, warning or error")


@dataclass(frozen=True, slots=True)
class Config:
    broker: BrokerSection = field(default_factory=BrokerSection)
    limits: LimitsSection = field(default_factory=LimitsSection)
    listeners: tuple[ListenerSection, ...] = ()
    persistence: PersistenceSection = field(default_factory=PersistenceSection)
    log: LogSection = field(default_factory=LogSection)
    source: str = "<default>"


# TOML table name -> (Config attribute, section class, is an array of tables)
SECTIONS: dict[str, tuple[str, type, bool]] = {
    "broker": ("broker", BrokerSection, False),
    "limits": ("limits", LimitsSection, False),
    "listener": ("listeners", ListenerSection, True),
    "persistence": ("persistence", PersistenceSection, False),
    "log": ("log", LogSection, False),
}

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


LOOPBACK = ("127.", "::1", "localhost")


def is_loopback(bind: str) -> bool:
    return bind.startswith(LOOPBACK) or bind == "0:0:0:0:0:0:0:1"


def anonymous_allowed(config: Config, listener: ListenerSection) -> tuple[bool, str]:
    """Whether `listener` accepts clients without a user name, and why (for the log)."""
    if listener.allow_anonymous is not None:
        return listener.allow_anonymous, "set on this listener"
    if config.broker.allow_anonymous is not None:
        return config.broker.allow_anonymous, "set in [broker]"
    public = [f"{item.bind}:{item.port}" for item in config.listeners
              if not is_loopback(item.bind)]
    if public:
        return False, (f"not set, and {', '.join(public)} is not a loopback address: set "
                       "allow_anonymous = true to accept clients without a user name")
    return True, "not set, and every listener binds to a loopback address"


def describe(config: Config) -> list[str]:
    """Human-readable lines saying what this configuration would do (for `greenfly check`)."""
    lines = [f"{listener.protocol} on {listener.bind}:{listener.port}"
             + (f" at {', '.join(listener.path)}" if listener.protocol == "websockets" else "")
             for listener in config.listeners]
    persistence = config.persistence
    lines.append(f"sessions journaled in {config.broker.data_dir} (fsync = {persistence.fsync})"
                 if persistence.enabled else "sessions kept in memory only (persistence off)")
    for listener in config.listeners:
        allowed, why = anonymous_allowed(config, listener)
        where = f"{listener.bind}:{listener.port}"
        lines.append(f"{where}: anonymous clients {'allowed' if allowed else 'refused'} ({why})")
        password_file = listener.password_file or config.broker.password_file
        if password_file:
            lines.append(f"{where}: passwords from {password_file}")
        acl_file = listener.acl_file or config.broker.acl_file
        if acl_file:
            lines.append(f"{where}: access rules from {acl_file}")
        if listener.tls:
            lines.append(f"{where}: TLS ({listener.tls_version} or newer"
                         + (", client certificate required" if listener.require_certificate
                            else "") + ")")
    return lines


def documented_keys() -> list[tuple[str, str, Any, str]]:
    """(section, key, default, doc) for every key, in order: the README's table comes from here."""
    out = []
    for table, (_attr, cls, _is_array) in SECTIONS.items():
        for f in dataclasses.fields(cls):
            out.append((table, f.name, f.default, f.metadata["doc"]))
    return out


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

    def error(self, table: str, index: int | None, key: str | None, message: str) -> ConfigError:
        path = table if index is None else f"{table}[{index}]"
        if key:
            path += f".{key}"
        return ConfigError(message, file=self.source, line=self.line_of(table, index, key),
                           key=path)


def _markdown_default(value: Any) -> str:
    if value is None:
        return "not set"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, tuple):
        return "`[" + ", ".join(f'"{item}"' for item in value) + "]`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    return f"`{value}`"


def markdown_table() -> str:
    """Every key with its default and doc, as the README's configuration table."""
    rows = ["| section | key | default | meaning |", "|---|---|---|---|"]
    for table, key, default, doc in documented_keys():
        name = f"[[{table}]]" if SECTIONS[table][2] else f"[{table}]"
        rows.append(f"| `{name}` | `{key}` | {_markdown_default(default)} | {doc} |")
    return "\n".join(rows) + "\n"

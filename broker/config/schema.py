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

import functools
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .bridge_topics import BridgeTopic, topic_lines

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
        boolean, None, "accept clients without a user name; when not set: only from a "
        "client whose real address (behind a trusted proxy, the one it names) is loopback, "
        "and only if every listener binds to a loopback address")
    password_file: str | None = option(
        text, None, "Mosquitto-format password file (user:$7$...); clients must then log in "
        "unless anonymous clients are allowed")
    acl_file: str | None = option(text, None, "Mosquitto-format ACL file; when set, anything "
                                  "it does not grant is denied")
    hash_threads: int = option(
        integer(1, 64), 2, "threads that check passwords (PBKDF2), apart from the journal's "
        "fsyncs, so a login burst never delays a durable acknowledgement")
    hash_queue: int = option(
        integer(0, 100_000), 32, "password checks that may wait for a hash thread; one more, "
        "or one that waits longer than connect_timeout, is refused with CONNACK 0x03 "
        "(MQTT 5: 0x89 server busy)")
    persistent_client_expiration: int = option(
        integer(0, 2**31), 0, "seconds after disconnect when a persistent session is "
        "discarded; 0 keeps it forever (MQTT 5 clients set their own session expiry interval)")
    retain_available: bool = option(
        boolean, True, "accept retained messages; false: a PUBLISH with retain 1 is refused "
        "(MQTT 5 DISCONNECT 0x9A), and MQTT 5 clients are told so in CONNACK")
    response_information: str | None = option(
        text, None, "MQTT 5 request/response: a topic prefix offered to clients that ask for "
        "response information (CONNACK carries PREFIX/<client id>); not set: none offered")
    reveal_denials: bool = option(
        boolean, True, "MQTT 5: a publish or subscription the ACL refuses is answered 0x87 not "
        "authorized; false: 0x80 unspecified error, which does not tell the client that a rule "
        "protects the topic")


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
    max_outbox_bytes: int = option(integer(0, 2**62), 1_048_576,
                                   "bytes waiting to be written to one client (beyond what "
                                   "its socket holds) before QoS 0 messages to it are dropped, "
                                   "counted and logged (0 = no limit)")
    max_packet_size: int = option(integer(20, 268_435_460), 268_435_455,
                                  "largest packet accepted, header included")
    max_topic_alias: int = option(integer(0, 65_535), 10,
                                  "MQTT 5 topic aliases a client may set per connection "
                                  "(0 = none)")


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
    protocol: str = option(choice("mqtt", "websockets", "http"), "mqtt",
                           "mqtt (plain TCP), websockets (MQTT over WebSocket, binary frames) "
                           "or http (the operator endpoints: /metrics, /healthz, /readyz, "
                           "/api/v1/, the status page)")
    path: tuple[str, ...] = option(url_paths, ("/mqtt",),
                                   "websockets only: the URL path, or a list of paths, that "
                                   "upgrade; any other path gets HTTP 404")
    trusted_proxies: tuple[str, ...] = option(
        addresses, ("127.0.0.1", "::1"), "proxies (addresses or networks) believed about the "
        "client's address: websockets: X-Forwarded-For (the right-most entry not in this list) "
        "or X-Real-IP; mqtt with proxy_protocol: the only peers accepted")
    proxy_protocol: bool = option(
        boolean, False, "mqtt only: every connection starts with a PROXY protocol header "
        "(v1 or v2, from nginx-stream's proxy_protocol on or frp) naming the client; only "
        "trusted_proxies may connect, and one without a valid header is closed")
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
    # -- the http listener (operator endpoints) --
    token_file: str | None = option(
        text, None, "http only: a file holding the bearer token that admin API actions (and "
        "every request on a non-loopback bind) must present; not set: those are refused")

    @property
    def tls(self) -> bool:
        return self.certfile is not None

    @staticmethod
    def check_given(values: dict[str, Any]) -> tuple[str, str] | None:
        """(key, message) when keys given together do not fit; None when they do."""
        protocol = values.get("protocol", "mqtt")
        if protocol == "mqtt":
            if "path" in values:
                return "path", ('only a websockets listener has this key; add '
                                'protocol = "websockets" or remove it')
            if "trusted_proxies" in values and not values.get("proxy_protocol"):
                return "trusted_proxies", ("an mqtt listener believes proxies only with "
                                           "proxy_protocol = true; add it or remove this key")
        elif values.get("proxy_protocol"):
            return "proxy_protocol", ("websockets listeners take the client's address from "
                                      "X-Forwarded-For (trusted_proxies); the PROXY protocol "
                                      'is for protocol = "mqtt" listeners')
        if protocol != "http" and "token_file" in values:
            return "token_file", 'only an http listener has this key (protocol = "http")'
        if protocol == "http":
            for key in ("path", "trusted_proxies"):
                if key in values:
                    return key, ('only a websockets listener has this key; add '
                                 'protocol = "websockets" or remove it')
            for key in ("allow_anonymous", "password_file", "acl_file",
                        "use_identity_as_username"):
                if key in values:
                    return key, ("an MQTT key: an http listener checks the bearer token in "
                                 "token_file instead")
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


def host_ports(value: Any) -> tuple[str, ...]:
    """`host:port` or a list of them (`[v6]:port` for an IPv6 address), tried in order."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ValueError(f"expected \"host:port\" or a list of them, got {_describe(value)}")
    for item in items:
        host, _, port = item.rpartition(":") if isinstance(item, str) else ("", "", "")
        if not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65_536:
            raise ValueError(f"expected \"host:port\" (such as \"broker.example.org:8883\"), "
                             f"got {_describe(item)}")
    return tuple(items)


def backoff(value: Any) -> tuple[float, float]:
    """restart_timeout: seconds as [base, cap], or one number (a fixed delay, as Mosquitto)."""
    items = [value, value] if type(value) in (int, float) else value
    if (not isinstance(items, list) or len(items) != 2
            or not all(type(item) in (int, float) and 0.01 <= item <= 86_400 for item in items)
            or items[0] > items[1]):
        raise ValueError("expected [base, cap] in seconds (0.01..86400, base <= cap) or one "
                         f"number, got {_describe(value)}")
    return float(items[0]), float(items[1])


@dataclass(frozen=True, slots=True)
class BridgeSection:
    name: str = option(text, "", "the bridge's name (Mosquitto's `connection`): in logs, "
                       "the default client id and $SYS/broker/connection/<name>/state")
    address: tuple[str, ...] = option(host_ports, (), "the remote broker: \"host:port\" or "
                                      "a list of them, tried in order (failover)")
    protocol_version: str = option(choice("mqttv311", "mqttv5"), "mqttv311",
                                   "MQTT version spoken to the remote")
    client_id: str | None = option(text, None, "client id at the remote; not set: "
                                   "\"<hostname>.<name>\"")
    clean_session: bool = option(boolean, False, "false: the remote keeps the bridge's "
                                 "session (its subscriptions, what it owes) across outages")
    keepalive: int = option(integer(5, 65_535), 60, "seconds between PINGREQs on an idle link")
    remote_username: str | None = option(text, None, "user name at the remote")
    remote_password_file: str | None = option(
        text, None, "a file holding the remote password (never inline); read at each connect")
    topic: tuple[BridgeTopic, ...] = option(
        topic_lines, (), "what crosses, one Mosquitto `topic` line each: \"pattern "
        "[[[out|in|both] qos] local-prefix remote-prefix]\"")
    cafile: str | None = option(text, None, "TLS to the remote: CA certificates (PEM) that "
                                "sign its certificate; setting it turns TLS on")
    certfile: str | None = option(text, None, "TLS: the bridge's client certificate (PEM)")
    keyfile: str | None = option(text, None, "TLS: the key of certfile (PEM)")
    tls_version: str = option(choice("tlsv1.2", "tlsv1.3"), "tlsv1.2",
                              "TLS: the lowest protocol version accepted")
    insecure: bool = option(boolean, False, "TLS: do not check the remote's host name "
                            "against its certificate (tests only)")
    try_private: bool = option(boolean, True, "MQTT 3.1.1: tell the remote this is a bridge "
                               "(Mosquitto's bit in the CONNECT), so it does not echo the "
                               "bridge's messages back; false for remotes that refuse it")
    restart_timeout: tuple[float, float] = option(
        backoff, (5.0, 30.0), "reconnect delay in seconds, [base, cap]: doubled after each "
        "failure up to cap, with jitter")
    notifications: bool = option(boolean, True, "publish 1/0, retained, on "
                                 "$SYS/broker/connection/<name>/state as the link comes and goes")
    max_queued_messages: int = option(
        integer(0, 2**31), 100_000, "QoS 1/2 messages kept for the remote beyond those in "
        "flight while it is slow or down; past it new ones are dropped, counted and logged "
        "(0 = no limit)")

    @staticmethod
    def check_given(values: dict[str, Any]) -> tuple[str, str] | None:
        for key in ("name", "address", "topic"):
            if key not in values:
                return key, "every [[bridge]] needs name, address and topic"
        if ("certfile" in values) != ("keyfile" in values):
            return ("keyfile" if "certfile" in values else "certfile",
                    "a client certificate needs both certfile and keyfile")
        for key in ("certfile", "tls_version", "insecure"):
            if key in values and "cafile" not in values:
                return key, "a TLS key: this bridge has no cafile (which turns TLS on)"
        if "remote_password_file" in values and "remote_username" not in values:
            return "remote_password_file", "a password needs remote_username"
        return None


@dataclass(frozen=True, slots=True)
class LogSection:
    level: str = option(choice("debug", "info", "warning", "error"), "info",
                        "log level: debug, info, warning or error")
    drop_log_interval: float = option(
        number(0.05, 86_400), 60.0, "seconds between a client's lines about dropped messages: "
        "the first drop is logged at once, the rest summed per client and logged with their "
        "count every interval")
    format: str = option(
        choice("text", "json"), "text", "text: one line per event (on the systemd journal, "
        "with its syslog priority, <3> error to <7> debug); json: one JSON object per line "
        "(time, level, logger, message, exception and fields such as client_id) for log "
        "shippers")


NODE_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def node_id(value: Any) -> str:
    """A cluster node's name: it goes into Redis key names and the log, so a short plain word."""
    if (not isinstance(value, str) or not value or len(value) > 64
            or not set(value) <= NODE_ID_CHARS):
        raise ValueError("expected 1 to 64 letters, digits, '-', '_' or '.' (such as \"n1\"), "
                         f"got {_describe(value)}")
    return value


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def redis_url(value: Any) -> str:
    """redis://host:port/db, rediss:// (TLS) or unix:///path; never with a password in it."""
    if not isinstance(value, str) or not value.startswith(REDIS_SCHEMES):
        raise ValueError("expected a URL starting with redis://, rediss:// (TLS) or unix:// "
                         f"(such as \"redis://127.0.0.1:6379/0\"), got {_describe(value)}")
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"the port is not a number in 1..65535: {value!r}") from None
    if parts.password is not None:
        # A secret in the main config ends up in backups, `greenfly check` output and ps.
        raise ValueError("the URL holds a password: put it in redis_password_file instead")
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError(f"expected unix:///path/to/redis.sock, got {value!r}")
    else:
        if not parts.hostname or port == 0:
            raise ValueError(f"expected a host (and port) after {parts.scheme}://, got {value!r}")
        if parts.path.strip("/") and not parts.path.strip("/").isdigit():
            raise ValueError(f"the path must be a database number such as /0, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class ClusterSection:
    node_id: str = option(node_id, "", "this node's name, stable across restarts and unique in "
                          "the cluster (letters, digits, '-', '_', '.'; at most 64)")
    redis_url: str = option(redis_url, "redis://127.0.0.1:6379/0",
                            "the Redis every node shares: redis://host:port/db, rediss:// "
                            "(TLS, the server's certificate checked against the system CAs) "
                            "or unix:///path/redis.sock; never with a password in it")
    redis_password_file: str | None = option(
        text, None, "a file holding the Redis password (AUTH; surrounding whitespace "
        "stripped), read at start; a user name goes in redis_url (redis://user@host)")
    key_prefix: str = option(text, "gf:", "prefix of every Redis key and channel the cluster "
                             "uses, so several clusters can share one Redis")
    lease_ms: int = option(integer(1000, 600_000), 10_000,
                           "milliseconds a node may go unheard before it counts as dead and "
                           "its sessions are adopted by the others")

    @staticmethod
    def check_given(values: dict[str, Any]) -> tuple[str, str] | None:
        if "node_id" not in values:
            return "node_id", "[cluster] needs node_id, this node's name (such as \"n1\")"
        return None


@dataclass(frozen=True, slots=True)
class Config:
    broker: BrokerSection = field(default_factory=BrokerSection)
    limits: LimitsSection = field(default_factory=LimitsSection)
    listeners: tuple[ListenerSection, ...] = ()
    persistence: PersistenceSection = field(default_factory=PersistenceSection)
    log: LogSection = field(default_factory=LogSection)
    bridges: tuple[BridgeSection, ...] = ()
    cluster: ClusterSection | None = None  # None: a single node, and redis is never imported
    source: str = "<default>"


# TOML table name -> (Config attribute, section class, is an array of tables)
SECTIONS: dict[str, tuple[str, type, bool]] = {
    "broker": ("broker", BrokerSection, False),
    "limits": ("limits", LimitsSection, False),
    "listener": ("listeners", ListenerSection, True),
    "persistence": ("persistence", PersistenceSection, False),
    "log": ("log", LogSection, False),
    "bridge": ("bridges", BridgeSection, True),
    "cluster": ("cluster", ClusterSection, False),
}

LOOPBACK = ("127.", "::1", "localhost")


def is_loopback(bind: str) -> bool:
    return bind.startswith(LOOPBACK) or bind == "0:0:0:0:0:0:0:1"


# Whether a listener accepts clients without a user name: always, never, or only from a
# client whose real address (behind a proxy: the one the proxy names) is a loopback address.
ANONYMOUS_ALLOWED, ANONYMOUS_REFUSED, ANONYMOUS_LOOPBACK = "allowed", "refused", "loopback"
ANONYMOUS_WORDS = {ANONYMOUS_ALLOWED: "allowed", ANONYMOUS_REFUSED: "refused",
                   ANONYMOUS_LOOPBACK: "allowed from loopback addresses only"}


def anonymous_policy(config: Config, listener: ListenerSection) -> tuple[str, str]:
    """How `listener` treats clients without a user name (ANONYMOUS_*), and why (for the log).

    Not set, with every listener on loopback, the broker looks private, but a proxy (nginx,
    frp) on the same machine makes it public while its own peer stays 127.0.0.1: so it is
    the client's real address, not the listener's, that must be loopback."""
    if listener.allow_anonymous is not None:
        return (ANONYMOUS_ALLOWED if listener.allow_anonymous else ANONYMOUS_REFUSED,
                "set on this listener")
    if config.broker.allow_anonymous is not None:
        return (ANONYMOUS_ALLOWED if config.broker.allow_anonymous else ANONYMOUS_REFUSED,
                "set in [broker]")
    public = [f"{item.bind}:{item.port}" for item in config.listeners
              if not is_loopback(item.bind) and item.protocol != "http"]
    if public:
        return ANONYMOUS_REFUSED, (f"not set, and {', '.join(public)} is not a loopback "
                                   "address: set allow_anonymous = true to accept clients "
                                   "without a user name")
    return ANONYMOUS_LOOPBACK, ("not set, and every listener binds to a loopback address; a "
                                "client behind a proxy is judged by the address the proxy "
                                "names")


@functools.lru_cache(maxsize=256)  # a few hosts connect many times: parsed once each
def is_loopback_host(host: str) -> bool:
    """True for a loopback IP address (127.0.0.0/8, ::1, IPv4-mapped 127.x); False for any
    other address or anything that is not one."""
    try:
        ip = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback

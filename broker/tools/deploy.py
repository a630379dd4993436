"""`greenfly deploy TOOL`: the configuration of what runs around the broker, derived from its own.

`greenfly deploy nginx|nginx-stream|frpc|frps|systemd|supervisor [-c CONFIG] [--domain D]
[--listen ADDR:PORT] [--no-tls] [--token T] [--upstream HOST:PORT,...]` prints one file for
that tool; an option that changes nothing in that tool's file is refused rather than ignored.
Why generated rather than hand-written: the numbers that must agree with the broker — the
upstream ports (the `[[listener]]`s) and every idle timeout on the path (from `[limits]
max_keepalive`) — then come from the one file that the broker reads, so they cannot drift.
The files in `deploy/` are this command's output for `deploy/greenfly.toml` (and, in
`deploy/cluster/`, for its nodes), and a test keeps them so.

The timeout rule. A client with keepalive K sends something at least every K seconds, and the
broker itself closes it after 1.5 x K seconds of silence [MQTT-3.1.2-24]. Anything on the path
that closes idle connections sooner (nginx's default `proxy_read_timeout` is 60 s) cuts healthy
clients: they reconnect every minute or two, and the broker logs a peer close each time. So
every proxy idle timeout here is 2 x max_keepalive — above 1.5 x the largest keepalive the
broker accepts, with half a keepalive of slack — and the broker, not a proxy, decides when a
client is gone. Each rendered timeout carries that arithmetic in a one-line comment.

Several nodes (`--upstream`, nginx and nginx-stream only): the upstream lists every node,
balanced by `least_conn`; the configuration given stands for every node's listener settings
(path, proxy_protocol, trusted_proxies, max_keepalive), which a cluster's nodes share.

Paths: the layout `deploy/install.sh` creates (/opt/greenfly, /etc/greenfly, the data_dir of
the configuration); `--prefix DIR` puts the first two under DIR, as `install.sh --prefix` does.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import secrets
import sys
import textwrap
from typing import Any

from ..config.exposure import anonymous_exposure
from ..config.loading import load_default, load_file
from ..config.schema import Config, ListenerSection
from ..errors import ConfigError
from . import deploy_templates
from .deploy_plan import DeployError, Plan

MQTT_MAX_KEEPALIVE = 65_535  # the largest keepalive the protocol can carry (u16)
DEFAULT_DOMAIN = "mqtt.example.com"

# tool -> (renderer, the options that mean something for it)
RENDERERS: dict[str, tuple[Any, frozenset[str]]] = {
    "nginx": (deploy_templates.nginx, frozenset({"listen", "no_tls", "cert", "key",
                                                 "http_listen", "expose_status",
                                                 "upstream"})),
    "nginx-stream": (deploy_templates.nginx_stream, frozenset({"listen", "no_tls", "cert",
                                                               "key", "upstream"})),
    "frpc": (deploy_templates.frpc, frozenset({"listen", "token"})),
    "frps": (deploy_templates.frps, frozenset({"listen", "token"})),
    "systemd": (deploy_templates.systemd, frozenset({"prefix"})),
    "supervisor": (deploy_templates.supervisor, frozenset({"prefix"})),
}
# the tools whose file names the domain (nginx-stream only with TLS: the certificate's path)
USES_DOMAIN = frozenset({"nginx", "nginx-stream", "frpc"})
OPTION_NAMES = {"listen": "--listen", "no_tls": "--no-tls", "cert": "--cert", "key": "--key",
                "http_listen": "--http-listen", "prefix": "--prefix", "token": "--token",
                "expose_status": "--expose-status", "upstream": "--upstream"}
PLACEHOLDER_TOKEN = "CHANGE-ME"  # what the frp files once carried for the operator to replace
MIN_TOKEN = 16


def register(commands: Any, config_option: argparse.ArgumentParser) -> None:
    deploy = commands.add_parser(
        "deploy", parents=[config_option],
        help="print the nginx, frp, systemd or supervisor configuration for this broker config",
        description="Print one configuration file for a tool around the broker, with ports and "
        "idle timeouts derived from the broker configuration (listeners, max_keepalive).")
    deploy.add_argument("tool", choices=list(RENDERERS))
    deploy.add_argument("--domain",
                        help=f"the public name of the broker (default {DEFAULT_DOMAIN}); "
                        "nginx, nginx-stream with TLS, frpc")
    deploy.add_argument("--listen", metavar="ADDR:PORT",
                        help="where the tool listens: nginx 443 (80 with --no-tls), "
                        "nginx-stream 8883 (1883 with --no-tls), frps 7000; for frpc, the frps "
                        "address (default DOMAIN:7000)")
    deploy.add_argument("--no-tls", action="store_true",
                        help="nginx: plain HTTP/TCP, no certificate (behind another TLS "
                        "terminator, or for a test)")
    deploy.add_argument("--cert", help="TLS certificate chain (default: certbot's "
                        "/etc/letsencrypt/live/DOMAIN/fullchain.pem)")
    deploy.add_argument("--key", help="TLS private key (default: certbot's privkey.pem)")
    deploy.add_argument("--http-listen", metavar="ADDR:PORT",
                        help="nginx with TLS: where the HTTP-to-HTTPS redirect listens (80)")
    deploy.add_argument("--prefix", default="/",
                        help="systemd, supervisor: the root install.sh installed into "
                        "(default /)")
    deploy.add_argument("--expose-status", action="store_true",
                        help="nginx: also proxy /metrics, /api/v1/ and the status page to the "
                        "http listener, every request needing the bearer token")
    deploy.add_argument("--upstream", action="append", metavar="HOST:PORT[,HOST:PORT...]",
                        help="nginx, nginx-stream: the greenfly nodes of a cluster, balanced "
                        "by least_conn (repeat it or separate with commas); default: this "
                        "configuration's own listener")
    deploy.add_argument("--token", help="frps, frpc: the secret both share (auth.token); "
                        "default: a new random one, printed on stderr for the other side")
    deploy.set_defaults(handler=_handler)


def _handler(args: argparse.Namespace, path: str | None) -> int:
    try:
        config = load_file(path) if path else load_default()
    except ConfigError as exc:
        print(f"greenfly: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        text = render(args.tool, config, args)
    except DeployError as exc:
        print(f"greenfly deploy {args.tool}: {exc}", file=sys.stderr)
        return 2
    warnings = exposures(args.tool, config)
    for warning in warnings:
        print(f"greenfly deploy {args.tool}: WARNING: {warning}", file=sys.stderr)
        text = "".join(f"# {line}\n" for line in textwrap.wrap(f"WARNING: {warning}", 92)) + text
    sys.stdout.write(text)
    if args.tool in ("frps", "frpc") and not getattr(args, "token", None):
        other = "frpc" if args.tool == "frps" else "frps"
        print(f"greenfly deploy {args.tool}: generated a random auth.token; give {other} the "
              f"same one: greenfly deploy {other} --token {args.generated_token} ...",
              file=sys.stderr)
    if config.limits.max_keepalive in (0, MQTT_MAX_KEEPALIVE) and args.tool not in (
            "systemd", "supervisor"):
        print(f"greenfly deploy: note: max_keepalive is {config.limits.max_keepalive or 'unset'}"
              f", so idle timeouts are {2 * MQTT_MAX_KEEPALIVE} s (27 h); set [limits] "
              "max_keepalive (e.g. 300) to let proxies drop dead connections sooner",
              file=sys.stderr)
    return 0


# tool -> the listener protocols its file forwards clients to
FORWARDS_TO = {"nginx": ("websockets",), "nginx-stream": ("mqtt",),
               "frpc": ("mqtt", "websockets"), "frps": ("mqtt", "websockets")}


def exposures(tool: str, config: Config) -> list[str]:
    """Warnings for each listener this tool's file would put on the internet while it takes
    anonymous clients (config/exposure.py)."""
    found = []
    for protocol in FORWARDS_TO.get(tool, ()):
        listener = _plain_listener(config, protocol)
        warning = anonymous_exposure(config, listener) if listener is not None else None
        if warning is not None:
            found.append(warning)
    return found


def render(tool: str, config: Config, args: argparse.Namespace) -> str:
    renderer, applicable = RENDERERS[tool]
    defaults = {"listen": None, "no_tls": False, "cert": None, "key": None,
                "http_listen": None, "prefix": "/", "token": None, "expose_status": False,
                "upstream": None}
    for name, default in defaults.items():
        if getattr(args, name, default) != default and name not in applicable:
            raise DeployError(f"{OPTION_NAMES[name]} does not apply to {tool}")
    if getattr(args, "domain", None) is not None and (
            tool not in USES_DOMAIN or (tool == "nginx-stream" and args.no_tls)):
        # Said rather than ignored: a --domain that changes nothing hides a wrong command.
        raise DeployError(f"--domain does not apply to {tool}"
                          + (" --no-tls" if tool in USES_DOMAIN else ""))
    return renderer(make_plan(config, args))


def check_address(option: str, value: str) -> None:
    """`--listen`/`--http-listen`: PORT or ADDR:PORT with a port nginx or frp can bind and an
    address that is one (nginx would refuse 127.0.0.1:99999 only when it starts)."""
    match = re.fullmatch(r"(?:\[([^\]]*)\]:|([A-Za-z0-9.-]+):)?(\d{1,5})", value)
    if match is None:
        raise DeployError(f"{option} {value!r}: expected PORT or ADDR:PORT (such as 443, "
                          "127.0.0.1:8443 or [::1]:8443)")
    ipv6, host, port = match.groups()
    if not 1 <= int(port) <= 65535:
        raise DeployError(f"{option} {value!r}: port {int(port)} is not in 1..65535")
    try:
        if ipv6 is not None:
            ipaddress.IPv6Address(ipv6)
        elif host is not None and re.fullmatch(r"[\d.]+", host):
            ipaddress.IPv4Address(host)
    except ValueError:
        kind = "IPv6" if ipv6 is not None else "IPv4"
        raise DeployError(f"{option} {value!r}: {ipv6 if ipv6 is not None else host!r} is "
                          f"not an {kind} address") from None


def upstreams(given: list[str] | None) -> tuple[str, ...]:
    """`--upstream`, repeated or comma-separated: each HOST:PORT checked (nginx would take a
    bad one only to fail at start or, for a name, at its first connection), none twice."""
    found: list[str] = []
    for value in (item.strip() for option in given or () for item in option.split(",")):
        match = re.fullmatch(r"(?:\[([^\]]*)\]|([A-Za-z0-9.-]+)):(\d{1,5})", value)
        if match is None:
            raise DeployError(f"--upstream {value!r}: expected HOST:PORT (such as "
                              "127.0.0.1:1884, node2.internal:1884 or [::1]:1884)")
        check_address("--upstream", value)
        if value in found:
            raise DeployError(f"--upstream {value!r} is given twice")
        found.append(value)
    if given is not None and not found:
        raise DeployError("--upstream: no HOST:PORT given")
    return tuple(found)


def frp_token(args: argparse.Namespace) -> str:
    """The frp secret: the one given (not the old placeholder, not short), or a new random
    one, which `_handler` then prints for the other side."""
    given = getattr(args, "token", None)
    if given is None:
        args.generated_token = secrets.token_urlsafe(32)
        return str(args.generated_token)
    if given == PLACEHOLDER_TOKEN:
        raise DeployError(f"--token {PLACEHOLDER_TOKEN} is the old placeholder: leave --token "
                          "out for a random one, or give your own secret")
    if len(given) < MIN_TOKEN:
        raise DeployError(f"--token: at least {MIN_TOKEN} characters (leave it out for a "
                          "random one)")
    if not re.fullmatch(r"[A-Za-z0-9._~+/=-]+", given):
        raise DeployError("--token: only letters, digits and -._~+/= (it goes in a TOML "
                          "string as it is)")
    return str(given)


def make_plan(config: Config, args: argparse.Namespace) -> Plan:
    domain = getattr(args, "domain", None) or DEFAULT_DOMAIN
    if not re.fullmatch(r"[A-Za-z0-9.-]+", domain):
        raise DeployError(f"--domain {domain!r}: expected a host name such as {DEFAULT_DOMAIN}")
    for option in ("listen", "http_listen"):
        value = getattr(args, option, None)
        if value is not None:
            check_address(OPTION_NAMES[option], value)
    data_dir = config.broker.data_dir
    if args.tool in ("systemd", "supervisor") and not os.path.isabs(data_dir):
        raise DeployError(f"[broker] data_dir {data_dir!r} is relative; a service needs an "
                          "absolute path (such as /var/lib/greenfly)")
    nodes = upstreams(getattr(args, "upstream", None))
    cert = getattr(args, "cert", None) or f"/etc/letsencrypt/live/{domain}/fullchain.pem"
    key = getattr(args, "key", None) or f"/etc/letsencrypt/live/{domain}/privkey.pem"
    return Plan(domain=domain, listen=getattr(args, "listen", None),
                http_listen=getattr(args, "http_listen", None),
                tls=not getattr(args, "no_tls", False), cert=cert, key=key,
                prefix=getattr(args, "prefix", "/") or "/",
                websockets=_plain_listener(config, "websockets"),
                mqtt=_plain_listener(config, "mqtt"),
                http=_plain_listener(config, "http") if getattr(args, "expose_status", False)
                else None,
                expose_status=getattr(args, "expose_status", False),
                max_keepalive=config.limits.max_keepalive or MQTT_MAX_KEEPALIVE,
                connect_timeout=config.broker.connect_timeout, data_dir=data_dir,
                token=frp_token(args) if args.tool in ("frps", "frpc") else "",
                upstreams=nodes,
                # where /readyz answers, named in the cluster's file; port 0 names nothing
                ready=next((item for item in config.listeners if item.protocol == "http"
                            and item.port), None) if nodes else None)


def _plain_listener(config: Config, protocol: str) -> ListenerSection | None:
    """The first listener of `protocol` without TLS of its own (the proxy terminates TLS);
    one with `proxy_protocol = true` first, since it is there for proxies."""
    candidates = sorted((item for item in config.listeners if item.protocol == protocol
                         and not item.certfile), key=lambda item: not item.proxy_protocol)
    if not candidates:
        return None
    listener = candidates[0]
    if listener.port == 0:
        raise DeployError(f"the {protocol} listener on {listener.bind} has port 0 "
                          "(a random port): a proxy needs a fixed one")
    return listener


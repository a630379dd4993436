"""Would a proxy in front of a listener let anyone in without a user name?

`greenfly deploy` (for the listener each rendered file forwards to) and `greenfly check` (for
every listener) say so loudly. Two ways it happens:
- anonymous clients are allowed outright (`allow_anonymous = true`): a proxy publishes that;
- `allow_anonymous` is not set and everything binds loopback, so anonymous clients are taken
  from loopback addresses, but the listener cannot see the real address behind a proxy: an
  `mqtt` listener without `proxy_protocol`, or a `websockets` listener that does not trust
  127.0.0.1 (nginx's X-Forwarded-For is then ignored). Every proxied client is 127.0.0.1.
"""

from __future__ import annotations

import ipaddress

from .schema import ANONYMOUS_ALLOWED, ANONYMOUS_LOOPBACK, Config, ListenerSection, anonymous_policy

NGINX = ipaddress.ip_address("127.0.0.1")  # where a proxy on the same machine connects from


def _blind_behind_a_proxy(listener: ListenerSection) -> tuple[str, str] | None:
    """None when a proxy on this machine can tell the listener who the client is; else why
    it cannot, and the other way to fix it."""
    if listener.protocol == "mqtt":
        if listener.proxy_protocol:
            return None
        return ("a TCP proxy (nginx-stream, frp) makes every client look like 127.0.0.1",
                "or set proxy_protocol = true on the listener (greenfly deploy nginx-stream "
                "and frpc then have the proxy name each client)")
    if any(NGINX in ipaddress.ip_network(item, strict=False)
           for item in listener.trusted_proxies):
        return None
    return ("127.0.0.1 is not in its trusted_proxies, so a proxy's X-Forwarded-For is ignored "
            "and every client looks like 127.0.0.1", "or add 127.0.0.1 to trusted_proxies")


def anonymous_exposure(config: Config, listener: ListenerSection) -> str | None:
    """A warning when a proxy forwarding to `listener` would accept anonymous clients from
    the internet; None when it would not."""
    policy, why = anonymous_policy(config, listener)
    where = f"{listener.protocol} listener {listener.bind}:{listener.port}"
    if policy == ANONYMOUS_ALLOWED:
        return (f"behind a proxy, the {where} accepts anyone on the internet without a user "
                f"name (allow_anonymous = true, {why}); set allow_anonymous = false and a "
                "password_file")
    blind = _blind_behind_a_proxy(listener) if policy == ANONYMOUS_LOOPBACK else None
    if blind is None:
        return None
    return (f"behind a proxy, the {where} would accept anyone on the internet without a user "
            "name: with allow_anonymous not set it accepts anonymous clients from loopback "
            f"addresses, and {blind[0]}; set allow_anonymous = false and a password_file, "
            f"{blind[1]}")


def exposures(config: Config) -> list[str]:
    """`anonymous_exposure` of every listener that has one."""
    found = (anonymous_exposure(config, listener) for listener in config.listeners)
    return [warning for warning in found if warning is not None]

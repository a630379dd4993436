"""What `greenfly deploy` works out once from the broker configuration and the options: the
`Plan` every template reads. Apart from `deploy` and `deploy_templates` so that both import
it and neither imports the other."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..config.schema import ListenerSection


class DeployError(Exception):
    """The configuration or the options cannot give this tool a working file."""


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything a template needs, worked out once from the broker config and the options."""

    domain: str
    listen: str | None
    http_listen: str | None
    tls: bool
    cert: str
    key: str
    prefix: str
    websockets: ListenerSection | None
    mqtt: ListenerSection | None
    http: ListenerSection | None
    expose_status: bool
    max_keepalive: int
    connect_timeout: float
    data_dir: str
    token: str = ""  # frp's auth.token (frps, frpc only)
    upstreams: tuple[str, ...] = ()  # --upstream: the nodes of a cluster (nginx, nginx-stream)
    ready: ListenerSection | None = None  # the http listener, where /readyz answers

    @property
    def idle_timeout(self) -> int:
        """Seconds any proxy on the path may let a connection idle: 2 x max_keepalive."""
        return 2 * self.max_keepalive

    @property
    def timeout_why(self) -> str:
        k = self.max_keepalive
        return (f"{self.idle_timeout} s = 2 x max_keepalive {k} s: above the {1.5 * k:g} s "
                f"(1.5 x {k} s) a live client may stay silent")

    def upstream(self, listener: ListenerSection) -> str:
        """host:port a proxy on this machine uses to reach `listener`."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(listener.bind,
                                                                          listener.bind)
        return f"[{host}]:{listener.port}" if ":" in host else f"{host}:{listener.port}"

    def path(self, *parts: str) -> str:
        """An absolute install path, under --prefix."""
        return os.path.join(self.prefix, *(p.lstrip("/") for p in parts))

    @property
    def binary(self) -> str:
        return self.path("opt/greenfly/bin/greenfly")

    @property
    def config_file(self) -> str:
        return self.path("etc/greenfly/greenfly.toml")

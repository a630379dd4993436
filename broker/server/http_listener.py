"""`HttpListener`: a `[[listener]] protocol = "http"`, the operator's endpoints in the broker's
own process (/metrics, /healthz, /readyz, /api/v1/, the status page at /).

It is gevent's `pywsgi.WSGIServer` on the listener's bind and port (TLS with the same keys as
the MQTT listeners): each request is a greenlet of the hub, and every handler reads the
broker's state in memory without yielding, so a scrape or a page never blocks MQTT traffic.

Who may ask (`authorize`): on a loopback bind reads are open and actions (POST, DELETE) need
`Authorization: Bearer <token>`, the token being the content of `token_file`; on any other
bind every request needs it, except /healthz and /readyz (probes carry no token, and they tell
nothing but alive/ready). A request that names a client in `X-Forwarded-For`, `X-Real-IP` or
`Forwarded` came through a proxy (`greenfly deploy nginx --expose-status`), which connects
from loopback on behalf of anyone: it is treated as on a non-loopback bind, whatever the
bind. Why the header and not the peer: nginx on this machine is a loopback peer like a local
operator, and the rendered nginx always sets the header (appending the address it saw), so
a client cannot make it disappear; a local client that sends it only asks for the token.
A wrong token is 401 and counts as a failed login of that address:
`login_failed` waits as the MQTT login slow-down does, so a token cannot be guessed faster than
a password.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

import gevent
from gevent.pywsgi import WSGIServer

from ..config.loading import read_text
from ..config.schema import ListenerSection, is_loopback, is_loopback_host
from ..errors import ConfigError
from ..net.real_address import parse_ip
from ..net.tls import build_ssl_context
from .admin_api import AdminApi
from .health import readiness
from .http_types import Handler, Request, Response
from .login_throttle import LoginThrottle, delay_after
from .metrics import CONTENT_TYPE, Metrics
from .runtime_view import Runtime
from .status_history import StatusHistory
from .status_page_files import StatusPage

log = logging.getLogger("greenfly.http")

OPEN_PATHS = ("/healthz", "/readyz")  # answered without a token on any bind
FORWARDED_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP", "HTTP_FORWARDED")


REASONS = {200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
           403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict",
           503: "Service Unavailable"}


def login_failed(failures: LoginThrottle, host: str) -> float:
    """A wrong bearer token from `host`: one more failed login of that address, as for MQTT
    (the same throttle); waits the slow-down the address has earned, in this request's
    greenlet, before the 401. The one place the HTTP side calls the login slow-down."""
    delay = delay_after(failures.record(host, None, False))
    if delay:
        gevent.sleep(delay)
    return delay


class HttpListener:
    def __init__(self, config: ListenerSection, runtime: Runtime) -> None:
        self.config = config
        self.runtime = runtime
        self.auth_failures = 0
        self.metrics = Metrics(runtime, lambda: self.auth_failures)
        self.ssl_context = build_ssl_context(config)
        self.routes: dict[tuple[str, str], Handler] = {
            ("GET", "/metrics"): self._metrics,
            ("GET", "/healthz"): lambda request: Response.json(200, {"status": "alive"}),
            ("GET", "/readyz"): self._ready,
        }
        self.history = StatusHistory(runtime)
        self.routes.update(AdminApi(runtime, self.history.overview).routes())
        self.routes.update(StatusPage().routes())
        ssl_args = {"ssl_context": self.ssl_context} if self.ssl_context is not None else {}
        self._server = WSGIServer((config.bind, config.port), self._app, log=None,
                                  error_log=log, **ssl_args)

    # -- life ----------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._server.server_port

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.config.bind}:{self.port}"

    @property
    def listening(self) -> bool:
        return self._server.started and not self._server.closed

    def describe(self) -> str:
        return f"{self.scheme} on {self.config.bind}:{self.port}"

    def start(self) -> None:
        self._server.start()
        self.history.start()
        token = "set" if self.config.token_file else "not set: admin actions are refused"
        log.info("listening: %s (/metrics, /healthz, /readyz, /api/v1/, status page); "
                 "token_file %s", self.describe(), token)

    def stop(self) -> None:
        self.history.stop()
        self._server.close()

    # -- requests ------------------------------------------------------------------------------

    def _app(self, environ: dict[str, Any],
             start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            response = self._respond(environ)
        except Exception:  # a bug in one handler must not reach gevent's hub printer
            log.exception("HTTP %s %s failed", environ.get("REQUEST_METHOD"),
                          environ.get("PATH_INFO"))
            response = Response.json(500, {"error": "internal error, see the broker's log"})
        reason = REASONS.get(response.status, "Error")
        headers = [("Content-Type", response.content_type),
                   ("Content-Length", str(len(response.body))),
                   ("Cache-Control", "no-store"), *response.headers]
        start_response(f"{response.status} {reason}", headers)
        return [response.body]

    def _respond(self, environ: dict[str, Any]) -> Response:
        method = environ.get("REQUEST_METHOD", "GET")
        # PATH_INFO is the percent-decoded path as latin-1 (WSGI); topics are UTF-8.
        path = environ.get("PATH_INFO", "/").encode("latin-1").decode("utf-8", "replace")
        handler = self._route(method, path)
        if handler is None:
            allowed = [m for (m, prefix) in self.routes if _matches(prefix, path)]
            if allowed:
                return Response.json(405, {"error": f"{method} not allowed on {path}"})
            return Response.json(404, {"error": f"no such endpoint: {path}"})
        forwarded = any(environ.get(name) for name in FORWARDED_HEADERS)
        host = _client_host(environ) if forwarded else environ.get("REMOTE_ADDR", "")
        request = Request(method, path, _query(environ.get("QUERY_STRING", "")), host, False)
        refused = self._authorize(request, environ.get("HTTP_AUTHORIZATION"), forwarded)
        return refused if refused is not None else handler(request)

    def _route(self, method: str, path: str) -> Handler | None:
        best: tuple[int, Handler] | None = None
        for (verb, prefix), handler in self.routes.items():
            if verb == method and _matches(prefix, path) and (best is None
                                                               or len(prefix) > best[0]):
                best = (len(prefix), handler)
        return best[1] if best is not None else None

    def _authorize(self, request: Request, header: str | None,
                   forwarded: bool) -> Response | None:
        """None when the request may go on (and `request.authorized` says whether it carried
        the token); else the 401/403 answer. `forwarded`: a proxy passed it on."""
        if header is not None:
            if not self._token_matches(header):
                self.auth_failures += 1
                delay = login_failed(self.runtime.failures, request.host)
                log.warning("HTTP %s %s from %s: wrong bearer token (refused after %gs)",
                            request.method, request.path, request.host, delay)
                return _unauthorized("wrong token")
            request.authorized = True
            return None
        if request.path in OPEN_PATHS or (request.method == "GET" and not forwarded
                                          and is_loopback(self.config.bind)):
            return None
        why = ("this needs Authorization: Bearer <token> (the content of token_file)"
               if self.config.token_file else
               "this listener has no token_file: set one to allow it")
        return _unauthorized(why)

    def _token_matches(self, header: str) -> bool:
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not self.config.token_file:
            return False
        try:
            token = read_text(self.config.token_file, "token file").strip()
        except ConfigError as exc:  # read at each use: a rotated token needs no reload
            log.error("HTTP listener %s: %s", self.describe(), exc)
            return False
        return bool(token) and hmac.compare_digest(presented.strip().encode(), token.encode())

    # -- endpoints -----------------------------------------------------------------------------

    def _metrics(self, request: Request) -> Response:
        return Response(200, self.metrics.render(), CONTENT_TYPE)

    def _ready(self, request: Request) -> Response:
        ready, body = readiness(self.runtime)
        return Response.json(200 if ready else 503, body)


def _matches(prefix: str, path: str) -> bool:
    """An exact path, or a prefix ending in '/' that `path` continues."""
    return path == prefix or (prefix.endswith("/") and path.startswith(prefix))


def _client_host(environ: dict[str, Any]) -> str:
    """Who a proxy on this machine says it relays, for the log and the token slow-down: the
    nearest `X-Forwarded-For` entry (the one nginx appended), else `X-Real-IP`. Only a
    loopback peer is believed (the kit's nginx); otherwise the peer itself."""
    peer = environ.get("REMOTE_ADDR", "")
    if not is_loopback_host(peer):
        return peer
    chain = environ.get("HTTP_X_FORWARDED_FOR", "").split(",")
    named = parse_ip(chain[-1]) or parse_ip(environ.get("HTTP_X_REAL_IP", ""))
    return str(named) if named is not None else peer


def _unauthorized(why: str) -> Response:
    response = Response.json(401, {"error": why})
    response.headers.append(("WWW-Authenticate", 'Bearer realm="greenfly"'))
    return response


def _query(text: str) -> dict[str, str]:
    return dict(parse_qsl(text, keep_blank_values=True))

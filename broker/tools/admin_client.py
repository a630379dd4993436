"""Talking to a running broker's HTTP listener from the command line (`top`, `clients`, `kick`).

Where: a URL given on the command line, else the first `protocol = "http"` listener of the
configuration (`-c FILE`, or the embedded default's 127.0.0.1:8080). A listener bound to every
address (0.0.0.0, ::) is reached on loopback, the same machine. The token (the admin API's
actions need it; a non-loopback bind needs it for reads too) comes from `--token-file`, else
the listener's `token_file`; a token file this user cannot read is left out for reads, which
a loopback bind answers without one.

The standard library's urllib, and no gevent: the tools never load the runtime. Every failure
is an `AdminError` whose message says what to do (no http listener, broker not running, 401).
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from ..config.loading import read_text
from ..config.schema import Config, ListenerSection
from ..errors import ConfigError

API = "/api/v1"
TIMEOUT = 5.0
ANY_ADDRESS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


class AdminError(Exception):
    """A request could not be made or was refused; the message is for the operator."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    base: str  # scheme://host:port, no trailing slash
    token: str | None
    token_source: str | None  # where the token came from, or why there is none, for errors
    insecure: bool = False


def endpoint_from_url(url: str, token_file: str | None, insecure: bool = False) -> Endpoint:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AdminError(f"{url!r} is not an http:// or https:// URL of greenfly's http "
                         "listener (e.g. http://127.0.0.1:8080)")
    path = parts.path.rstrip("/")
    if path.endswith(API):  # the API's own URL, as the README shows it, works too
        path = path[:-len(API)]
    token, source = _token(token_file, "--token-file") if token_file else (None, None)
    return Endpoint(f"{parts.scheme}://{parts.netloc}{path}", token, source, insecure)


def endpoint_from_config(config: Config, token_file: str | None,
                         insecure: bool = False) -> Endpoint:
    listener = http_listener(config)
    if listener.port == 0:
        raise AdminError(f"{config.source}'s http listener has port = 0 (a free port picked at "
                         "each start): give its URL, as the broker's log names it "
                         "(\"listening: http on ...\")")
    host = ANY_ADDRESS.get(listener.bind, listener.bind)
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if listener.tls else "http"
    if token_file:
        token, source = _token(token_file, "--token-file")
    elif listener.token_file:
        token, source = _token(listener.token_file, "the listener's token_file", quiet=True)
    else:
        token, source = None, f"{config.source} sets no token_file for its http listener"
    return Endpoint(f"{scheme}://{host}:{listener.port}", token, source, insecure)


def http_listener(config: Config) -> ListenerSection:
    for listener in config.listeners:
        if listener.protocol == "http":
            return listener
    raise AdminError(f"{config.source} has no http listener: add a [[listener]] with "
                     'protocol = "http" (the embedded default has one on 127.0.0.1:8080), '
                     "or give the listener's URL")


def _token(path: str, what: str, quiet: bool = False) -> tuple[str | None, str]:
    try:
        token = read_text(path, "token file").strip()
    except ConfigError as exc:
        if quiet:  # reads on loopback need no token: say why only if one turns out needed
            return None, f"{what} {path} cannot be read ({exc}); try --token-file or sudo"
        raise AdminError(f"{exc}") from None
    if not token:
        raise AdminError(f"the token file {path} is empty")
    return token, f"{what} {path}"


class AdminClient:
    """Requests to one broker's admin API; JSON in, JSON out."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._ssl = ssl.create_default_context()
        if endpoint.insecure:
            self._ssl.check_hostname = False
            self._ssl.verify_mode = ssl.CERT_NONE

    @property
    def url(self) -> str:
        return self.endpoint.base

    def overview(self) -> dict[str, Any]:
        return self.get("overview")

    def clients(self, limit: int = 1000) -> dict[str, Any]:
        return self.get(f"clients?limit={limit}")

    def kick(self, client_id: str) -> dict[str, Any]:
        if self.endpoint.token is None:
            raise AdminError("disconnecting a client needs the http listener's bearer token: "
                             f"{self.endpoint.token_source or 'no token given'}; pass "
                             "--token-file FILE (the file named by token_file)")
        return self.request("POST", f"clients/{quote(client_id, safe='')}/disconnect")

    def get(self, path: str) -> dict[str, Any]:
        return self.request("GET", path)

    def request(self, method: str, path: str) -> dict[str, Any]:
        url = f"{self.endpoint.base}{API}/{path}"
        headers = {"Accept": "application/json"}
        if self.endpoint.token is not None:
            headers["Authorization"] = f"Bearer {self.endpoint.token}"
        req = urllib.request.Request(url, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT, context=self._ssl) as reply:
                return json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            raise AdminError(self._refused(exc, method)) from None
        except urllib.error.URLError as exc:
            raise AdminError(self._unreachable(exc.reason)) from None
        except (OSError, ValueError) as exc:  # a reset mid-answer, or not JSON: not greenfly
            raise AdminError(f"{self.endpoint.base}: no answer from greenfly's admin API "
                             f"({exc})") from None

    def _refused(self, exc: urllib.error.HTTPError, method: str) -> str:
        try:
            why = json.loads(exc.read()).get("error", "")
        except (ValueError, AttributeError, OSError):
            why = ""
        text = f"{self.endpoint.base} answered {exc.code} {exc.reason}" + (f": {why}" if why
                                                                          else "")
        if exc.code == 401:
            if self.endpoint.token is None:
                return (f"{text}. This needs the bearer token: pass --token-file FILE "
                        f"({self.endpoint.token_source or 'no token_file known'})")
            return f"{text}. The token from {self.endpoint.token_source} was refused"
        if exc.code == 404 and not why:
            return f"{text}: is this greenfly's http listener?"
        return text

    def _unreachable(self, reason: object) -> str:
        if isinstance(reason, ConnectionRefusedError):
            return (f"cannot reach the broker at {self.endpoint.base}: connection refused. Is "
                    "greenfly running, with this configuration (-c FILE)?")
        if isinstance(reason, ssl.SSLError):
            return (f"{self.endpoint.base}: TLS failed ({reason}); --insecure skips the "
                    "certificate check")
        return f"cannot reach the broker at {self.endpoint.base}: {reason}"

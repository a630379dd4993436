"""A blocking HTTP client for the broker's `protocol = "http"` listener (urllib, nothing more):
the status, headers and body of one request, whatever the status."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

HTTP_LISTENER = '[[listener]]\nbind = "127.0.0.1"\nport = 0\nprotocol = "http"\n'


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


def request(url: str, method: str = "GET", token: str | None = None,
            timeout: float = 15.0) -> Reply:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    req = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as reply:
            return Reply(reply.status, dict(reply.headers), reply.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, dict(exc.headers), exc.read())

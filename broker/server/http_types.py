"""The request and response the HTTP listener's handlers take and give (plain data: the
endpoints are tested through the listener, never apart from it)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

JSON = "application/json"


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = JSON
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def json(cls, status: int, value: Any) -> Response:
        return cls(status, json.dumps(value, separators=(",", ":")).encode() + b"\n")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    host: str  # the peer's address (a proxy's, behind one)
    authorized: bool  # presented the right bearer token

# A route: (method, path prefix) -> handler; the longest matching prefix wins.
Handler = Callable[[Request], Response]

"""`GET /`: the live status page, three static files shipped in the package
(`status_page/`, package data in pyproject.toml) and read once, at start.

The page is plain HTML, CSS and JavaScript written for greenfly: no CDN (a firewalled VPS
cannot reach one) and no third-party front-end code. It polls `/api/v1/overview` and
`/api/v1/clients`, and draws its chart itself on a canvas.
"""

from __future__ import annotations

from importlib import resources

from .http_types import Handler, Request, Response

FILES = {"/": ("index.html", "text/html; charset=utf-8"),
         "/status.css": ("status.css", "text/css; charset=utf-8"),
         "/status.js": ("status.js", "text/javascript; charset=utf-8")}
SECURITY_HEADERS = [("X-Content-Type-Options", "nosniff"),
                    ("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'")]


class StatusPage:
    def __init__(self) -> None:
        folder = resources.files(__package__).joinpath("status_page")
        self.files = {path: (folder.joinpath(name).read_bytes(), kind)
                      for path, (name, kind) in FILES.items()}

    def routes(self) -> dict[tuple[str, str], Handler]:
        return {("GET", path): self.serve for path in self.files}

    def serve(self, request: Request) -> Response:
        body, kind = self.files[request.path]
        return Response(200, body, kind, list(SECURITY_HEADERS))

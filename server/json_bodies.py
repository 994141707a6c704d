"""Request bodies read as JSON whatever their Content-Type, where clients get it wrong.

Ollama parses every body as JSON, and its clients rely on it: litellm's ollama providers and
Ollama's own curl examples send JSON as form data or with no Content-Type at all. Under /api/ the
header is therefore always taken as JSON. Under /v1/ so are a missing one and the two that a
`curl -d` or a bare `fetch` sends by default (form data, plain text), as llama-server does; a
body that names any other type is answered as what it says. Reading these as JSON opens nothing
to web pages: their cross-site posts are refused by Origin (`server.origins`).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

_JSON = (b"content-type", b"application/json")
# What clients send when they forget to say JSON: curl -d, and fetch() given a string.
_DEFAULTS = (b"application/x-www-form-urlencoded", b"text/plain")


class JsonBodies:
    """Rewrites the Content-Type of request bodies that are JSON by the route's contract."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH", "DELETE"):
            path: str = scope["path"]
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            declared = [v for k, v in scope["headers"] if k == b"content-type"]
            by_default = all(v.split(b";")[0].strip().lower() in _DEFAULTS for v in declared)
            if path.startswith("/api/") or (path.startswith("/v1/") and by_default):
                scope = {**scope, "headers": [*headers, _JSON]}
        await self.app(scope, receive, send)

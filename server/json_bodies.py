"""Request bodies read as JSON whatever their Content-Type, where clients get it wrong.

Ollama parses every body as JSON, and its clients rely on it: litellm's ollama providers and
Ollama's own curl examples send JSON as form data or with no Content-Type at all. Under /api/ the
header is therefore always taken as JSON; under /v1/ only a missing one is (a body that says it
is something else is answered as what it says).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

_JSON = (b"content-type", b"application/json")


class JsonBodies:
    """Rewrites the Content-Type of request bodies that are JSON by the route's contract."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH", "DELETE"):
            path: str = scope["path"]
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            declared = len(headers) != len(scope["headers"])
            if path.startswith("/api/") or (path.startswith("/v1/") and not declared):
                scope = {**scope, "headers": [*headers, _JSON]}
        await self.app(scope, receive, send)

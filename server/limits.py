"""Edge protections as ASGI middleware: request body size, API key, CORS allow-list, counting.

Pure ASGI (not BaseHTTPMiddleware) so that streamed answers pass through untouched.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmedge import Settings
from server.metrics import Metrics
from server.schemas import error_body
from server.wire import shape_error

# Routes reachable without the API key.
PUBLIC_PATHS = frozenset({"/health"})


async def _send_error(
    send: Send,
    status: int,
    body: dict[str, Any],
    headers: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
) -> None:
    payload = json.dumps(body).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": [*head, *headers]})
    await send({"type": "http.response.body", "body": payload})


def _ollama_shaped(scope: Scope, body: dict[str, Any], status: int = 400) -> dict[str, Any]:
    """Ollama clients read `error` as a string; Anthropic's want their typed error."""
    return shape_error(str(scope.get("path", "")), body, status)


class BodyLimit:
    """Refuses request bodies over `max_bytes` with 413, by their declared length or while they
    arrive; a body within the limit is read whole first and handed on unchanged."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        message = (
            f"the request body is larger than this server accepts ({self.max_bytes} bytes); "
            "send less, or start the server with a higher LLMEDGE_MAX_REQUEST_BYTES"
        )
        too_large = error_body(message, "invalid_request_error", None, "request_too_large")
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await _send_error(send, 413, _ollama_shaped(scope, too_large, 413))
        chunks, size = [], 0
        while True:
            received = await receive()
            if received["type"] == "http.disconnect":
                return
            chunk = received.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await _send_error(send, 413, _ollama_shaped(scope, too_large, 413))
            chunks.append(chunk)
            if not received.get("more_body", False):
                break
        pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay() -> Message:
            # The body once, then the real channel, which reports a client that disconnects.
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)


class ApiKey:
    """Wants `Authorization: Bearer KEY` (or Anthropic's `x-api-key: KEY`) on every route but
    /health (and CORS preflights)."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self.expected = f"Bearer {key}".encode()
        self.expected_key = key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        bearer = secrets.compare_digest(headers.get(b"authorization", b""), self.expected)
        if bearer or secrets.compare_digest(headers.get(b"x-api-key", b""), self.expected_key):
            return await self.app(scope, receive, send)
        message = "invalid or missing API key; send it as `Authorization: Bearer KEY`"
        body = error_body(message, "authentication_error", None, "invalid_api_key")
        await _send_error(
            send, 401, _ollama_shaped(scope, body, 401), [(b"www-authenticate", b"Bearer")]
        )


class CountRequests:
    """Counts answered requests by route template and status, for /metrics."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                route = scope.get("route")
                path = getattr(route, "path", None) or "unmatched"
                self.metrics.count_request(scope["method"], path, message["status"])
            await send(message)

        await self.app(scope, receive, counting_send)


def install_limits(app: FastAPI, settings: Settings, metrics: Metrics) -> None:
    """Wrap the app, innermost first: API key, body limit, counting, then CORS outermost, so a
    browser's preflight and every error carry the CORS headers."""
    if settings.api_key is not None:
        app.add_middleware(ApiKey, key=settings.api_key.get_secret_value())
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(CountRequests, metrics=metrics)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )

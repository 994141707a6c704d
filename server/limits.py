"""Edge protections as ASGI middleware: Host and Origin guards, request body size and text,
API key, CORS allow-list, counting.

Pure ASGI (not BaseHTTPMiddleware) so that streamed answers pass through untouched.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmedge import InvalidRequestError, Settings
from server.errors import send_error
from server.metrics import Metrics
from server.origins import HostCheck, OriginCheck, allowed_host_names
from server.schemas import error_body

# Routes reachable without the API key.
PUBLIC_PATHS = frozenset({"/health"})
# A JSON \\u escape of a UTF-16 surrogate, the only way a lone one reaches a decoded string (raw
# UTF-8 cannot encode one). Paired surrogates match too; the body is then searched properly.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogate_path(value: Any) -> str | None:
    """The dotted path (`messages.0.content`) of the first string in a decoded JSON value that
    holds a lone surrogate, or None. Iterative, so a deeply nested body cannot exhaust the stack."""
    pending: list[tuple[Any, str]] = [(value, "")]
    while pending:
        item, where = pending.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return where or "body"
        elif isinstance(item, dict):
            for key, sub in item.items():
                here = f"{where}.{key}" if where else str(key)
                if _SURROGATE.search(str(key)):
                    return here
                pending.append((sub, here))
        elif isinstance(item, list):
            pending.extend((sub, f"{where}.{i}" if where else str(i)) for i, sub in enumerate(item))
    return None


def _text_error(body: bytes) -> dict[str, Any] | None:
    """OpenAI's error body for a request whose JSON text holds a lone surrogate, else None."""
    if not _SURROGATE_ESCAPE.search(body):
        return None
    try:
        path = lone_surrogate_path(json.loads(body))
    except (ValueError, RecursionError):
        return None  # not JSON: the route's own validation answers
    if path is None:
        return None
    message = (
        f"{path}: the text holds a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff escape), "
        "which is not a character; send valid Unicode (pair it, or replace it with U+FFFD)"
    )
    return error_body(message, "invalid_request_error", path, "invalid_text")


def check_messages(settings: Settings, count: int, param: str = "messages") -> None:
    """Refuse a conversation longer than the server takes (LLMEDGE_MAX_MESSAGES), before any
    work is spent on it."""
    if count > settings.max_messages:
        raise InvalidRequestError(
            f"{param} holds {count} messages but this server takes at most "
            f"{settings.max_messages}; send fewer (drop or summarise the oldest), or start the "
            "server with a higher LLMEDGE_MAX_MESSAGES",
            param=param,
            code="too_many_messages",
        )


class BodyLimit:
    """Refuses request bodies over `max_bytes` with 413, by their declared length or while they
    arrive, and bodies whose JSON text holds a lone surrogate with 400; a body within the limit
    is read whole first and handed on unchanged."""

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
            return await send_error(scope, send, 413, too_large)
        chunks, size = [], 0
        while True:
            received = await receive()
            if received["type"] == "http.disconnect":
                return
            chunk = received.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await send_error(scope, send, 413, too_large)
            chunks.append(chunk)
            if not received.get("more_body", False):
                break
        body = b"".join(chunks)
        if (refusal := _text_error(body)) is not None:
            return await send_error(scope, send, 400, refusal)
        pending = [{"type": "http.request", "body": body, "more_body": False}]

        async def replay() -> Message:
            # The body once, then the real channel, which reports a client that disconnects.
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)


class ApiKey:
    """Wants `Authorization: Bearer KEY` (any case of `Bearer`, as RFC 9110 allows) or
    Anthropic's `x-api-key: KEY` on every route but /health (and CORS preflights)."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self.expected = key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        scheme, _, token = headers.get(b"authorization", b"").strip().partition(b" ")
        token = token.strip()
        bearer = scheme.lower() == b"bearer" and secrets.compare_digest(token, self.expected)
        if bearer or secrets.compare_digest(headers.get(b"x-api-key", b""), self.expected):
            return await self.app(scope, receive, send)
        message = "invalid or missing API key; send it as `Authorization: Bearer KEY`"
        body = error_body(message, "authentication_error", None, "invalid_api_key")
        await send_error(scope, send, 401, body, ((b"www-authenticate", b"Bearer"),))


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
    """Wrap the app, innermost first: API key, body limit, counting, the Origin check, CORS, and
    the Host check outermost, so a browser's preflight and every error carry the CORS headers
    and no request from a rebound name reaches anything."""
    if settings.api_key is not None:
        app.add_middleware(ApiKey, key=settings.api_key.get_secret_value())
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(CountRequests, metrics=metrics)
    app.add_middleware(OriginCheck, cors_origins=settings.cors_origins)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )
    allowed = allowed_host_names(settings.host, settings.allow_hosts)
    app.add_middleware(HostCheck, allowed=allowed)

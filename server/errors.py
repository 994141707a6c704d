"""Every failure leaves the server as OpenAI's error object, with the matching HTTP status.

Under /api/ (the Ollama API) the same error is `{"error": "message"}`, as Ollama clients read it;
under /v1/messages it is Anthropic's `{"type": "error", "error": {"type", "message"}}`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmedge import LlmedgeError
from llmedge.files import file_error
from server.schemas import error_body
from server.validation import validation_message
from server.wire import shape_error

log = logging.getLogger("llmedge.server")

_HTTP_TYPES = {401: "authentication_error", 404: "not_found_error", 405: "invalid_request_error"}


def _shaped(request: Request | None, body: dict[str, Any], status: int) -> dict[str, Any]:
    return body if request is None else shape_error(request.url.path, body, status)


async def send_error(
    scope: Scope,
    send: Send,
    status: int,
    body: dict[str, Any],
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    """Answer from ASGI middleware with an error `body`, shaped for the API at the path."""
    payload = json.dumps(shape_error(str(scope.get("path", "")), body, status)).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": [*head, *headers]})
    await send({"type": "http.response.body", "body": payload})


def error_response(exc: LlmedgeError, request: Request | None = None) -> JSONResponse:
    headers = {}
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after:
        headers["Retry-After"] = str(retry_after)
    body = error_body(str(exc), exc.error_type, exc.param, exc.code)
    shaped = _shaped(request, body, exc.http_status)
    return JSONResponse(shaped, status_code=exc.http_status, headers=headers)


class DiskErrors:
    """A full disk or an unwritable folder met while answering is a one-line error that says
    what to free (507 or 500), when no byte of the answer has left yet; any other `OSError` (a
    client gone mid-answer) goes on up. Middleware, not an exception handler: a handler for
    `OSError` would also catch the disconnects of streams already under way."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def watching_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watching_send)
        except OSError as exc:
            error = file_error(exc)
            if error is None or started:
                raise
            log.error("%s", error)
            body = error_body(str(error), error.error_type, error.param, error.code)
            await send_error(scope, send, error.http_status, body)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LlmedgeError)
    async def _llmedge(request: Request, exc: LlmedgeError) -> JSONResponse:
        return error_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = validation_message([dict(e) for e in exc.errors()])
        body = error_body(message, "invalid_request_error", param, "invalid_value")
        return JSONResponse(_shaped(request, body, 400), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error_type = _HTTP_TYPES.get(exc.status_code, "invalid_request_error")
        return JSONResponse(
            _shaped(request, error_body(str(exc.detail), error_type, None, None), exc.status_code),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RecursionError)
    async def _too_deep(request: Request, exc: RecursionError) -> JSONResponse:
        message = "the request nests too deeply to be read; flatten it"
        body = error_body(message, "invalid_request_error", None, "invalid_value")
        return JSONResponse(_shaped(request, body, 400), status_code=400)

    app.add_middleware(DiskErrors)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        body = error_body(f"internal error: {exc}", "server_error", None, None)
        return JSONResponse(_shaped(request, body, 500), status_code=500)

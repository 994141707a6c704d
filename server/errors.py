"""Every failure leaves the server as OpenAI's error object, with the matching HTTP status.

Under /api/ (the Ollama API) the same error is `{"error": "message"}`, as Ollama clients read it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope, Send

from llmedge import LlmedgeError
from llmedge.files import file_error
from server.schemas import error_body

log = logging.getLogger("llmedge.server")

_HTTP_TYPES = {401: "authentication_error", 404: "not_found_error", 405: "invalid_request_error"}


def _shaped(request: Request | None, body: dict[str, Any]) -> dict[str, Any]:
    if request is not None and request.url.path.startswith("/api/"):
        return {"error": body["error"]["message"]}
    return body


async def send_error(
    scope: Scope,
    send: Send,
    status: int,
    body: dict[str, Any],
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    """Answer from ASGI middleware with an error `body` in OpenAI's shape (Ollama's under /api)."""
    if str(scope.get("path", "")).startswith("/api/"):
        body = {"error": body["error"]["message"]}
    payload = json.dumps(body).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": [*head, *headers]})
    await send({"type": "http.response.body", "body": payload})


def error_response(exc: LlmedgeError, request: Request | None = None) -> JSONResponse:
    headers = {}
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after:
        headers["Retry-After"] = str(retry_after)
    body = error_body(str(exc), exc.error_type, exc.param, exc.code)
    return JSONResponse(_shaped(request, body), status_code=exc.http_status, headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    first = exc.errors()[0]
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(location) or None
    if first.get("type") == "extra_forbidden":
        return f"unsupported field {param!r}: llmedge does not implement it; remove it", param
    if first.get("type") == "json_invalid":
        return "the request body is not valid JSON", None
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{param or 'body'}: {message}", param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LlmedgeError)
    async def _llmedge(request: Request, exc: LlmedgeError) -> JSONResponse:
        return error_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        body = error_body(message, "invalid_request_error", param, "invalid_value")
        return JSONResponse(_shaped(request, body), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error_type = _HTTP_TYPES.get(exc.status_code, "invalid_request_error")
        return JSONResponse(
            _shaped(request, error_body(str(exc.detail), error_type, None, None)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RecursionError)
    async def _too_deep(request: Request, exc: RecursionError) -> JSONResponse:
        message = "the request nests too deeply to be read; flatten it"
        body = error_body(message, "invalid_request_error", None, "invalid_value")
        return JSONResponse(_shaped(request, body), status_code=400)

    @app.exception_handler(OSError)
    async def _os_error(request: Request, exc: OSError) -> JSONResponse:
        error = file_error(exc)
        if error is None:
            return await _unexpected(request, exc)
        log.error("%s", error)
        return error_response(error, request)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        body = error_body(f"internal error: {exc}", "server_error", None, None)
        return JSONResponse(_shaped(request, body), status_code=500)

"""The remote engine: requests the router sends elsewhere go to an OpenAI-compatible upstream.

Pure ASGI middleware, installed inside the API key and body limit checks. For a POST to
/v1/chat/completions, /v1/completions, /v1/embeddings or /v1/responses it reads the body's
`model` and asks the engine's router; when the answer is "remote" (`--backend remote`, a model
this host does not have, or one too large for it) the request goes upstream with the remote key,
never the caller's, and the answer comes back as the upstream sent it: status, body, and SSE
streams byte for byte. GET /v1/models is forwarded when every model is remote.

Nothing hangs: connecting gives up after CONNECT_TIMEOUT_S (502 in OpenAI's error shape), and an
upstream silent for READ_TIMEOUT_S ends the answer (504 before it began; an error event and
[DONE] inside a stream). Upstream errors that are not in OpenAI's shape are wrapped into it. A
caller that disconnects closes the upstream request, which stops its generation there.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmedge import Engine, LlmedgeError
from llmedge.routing import REMOTE
from server.schemas import error_body

FORWARDED_POSTS = frozenset(
    {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"}
)
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 300.0  # longest silence from the upstream, e.g. a long prompt's first token
MAX_ERROR_BYTES = 64 << 10
# Headers that describe one connection, not the message; the ASGI server sets its own.
HOP_HEADERS = frozenset({
    "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
    "proxy-authenticate", "proxy-authorization", "server", "date",
})  # fmt: skip


def upstream_base(url: str) -> str:
    """The upstream's /v1 URL, whether or not it was given with /v1."""
    base = url.rstrip("/")
    return base if base.endswith("/v1") else f"{base}/v1"


def openai_error(status: int, message: str, code: str) -> tuple[int, bytes]:
    error_type = "invalid_request_error" if status < 500 else "server_error"
    return status, json.dumps(error_body(message, error_type, None, code)).encode()


def shaped_error(status: int, payload: bytes, base: str) -> bytes:
    """An upstream error body in OpenAI's shape: as it came when it already is, else wrapped."""
    try:
        data = json.loads(payload)
    except ValueError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return payload
    text = payload.decode("utf-8", "replace").strip()[:500] or "no body"
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        text = data["message"]  # vLLM's older {"object": "error", "message": ...}
    return openai_error(
        status, f"the remote engine at {base} answered {status}: {text}", "remote_error"
    )[1]


async def _send_bytes(send: Send, status: int, body: bytes) -> None:
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class RemoteProxy:
    """Forwards the requests the router sends to the remote engine."""

    def __init__(self, app: ASGIApp, engine: Engine) -> None:
        import httpx  # only servers with a remote engine need it

        self.app = app
        self.engine = engine
        settings = engine.settings
        assert settings.remote_url is not None
        self.base = upstream_base(settings.remote_url)
        self.key = settings.remote_key.get_secret_value() if settings.remote_key else None
        self.httpx = httpx
        self.timeout = httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method, path = scope["method"], scope["path"]
        if method == "GET" and path == "/v1/models" and self.engine.backend_name == REMOTE:
            return await self._forward(scope, b"", receive, send)
        if method != "POST" or path not in FORWARDED_POSTS:
            return await self.app(scope, receive, send)
        chunks = []
        while True:  # the body limit outside has read and checked it already
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if await self._goes_remote(body):
            return await self._forward(scope, body, receive, send)
        pending = [{"type": "http.request", "body": body, "more_body": False}]

        async def replay() -> Message:
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)

    async def _goes_remote(self, body: bytes) -> bool:
        if self.engine.backend_name == REMOTE:
            return True
        try:
            model = json.loads(body).get("model")
        except (ValueError, AttributeError):
            return False  # the local route answers a malformed body
        if not isinstance(model, str):
            return False
        return await run_in_threadpool(self._routed_away, model)

    def _routed_away(self, model: str) -> bool:
        try:
            manifest = self.engine.resolve(model)
        except LlmedgeError:  # not stored here: the router decides
            manifest = None
        if manifest is not None and manifest.digest in {
            e.manifest.digest for e in self.engine.loaded()
        }:
            return False  # in memory here already (which also lowers the RAM the router sees)
        try:
            return self.engine.route(model).backend == REMOTE
        except LlmedgeError:  # e.g. a name the store refuses: the local route explains it
            return False

    def _headers(self, scope: Scope) -> dict[str, str]:
        given = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        headers = {k: given[k] for k in ("content-type", "accept") if k in given}
        headers["accept-encoding"] = "identity"  # bytes pass through as they arrive
        if self.key:
            headers["authorization"] = f"Bearer {self.key}"
        return headers

    async def _forward(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> None:
        httpx = self.httpx
        query = scope.get("query_string", b"").decode("latin-1")
        url = self.base + scope["path"].removeprefix("/v1") + (f"?{query}" if query else "")
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            request = client.build_request(
                scope["method"], url, content=body, headers=self._headers(scope)
            )
            try:
                response = await client.send(request, stream=True)
            except httpx.TimeoutException as exc:
                status, text = (
                    (504, "did not answer in time")
                    if isinstance(exc, httpx.ReadTimeout)
                    else (502, "could not be reached in time")
                )
                return await _send_bytes(send, *self._unreachable(status, text, exc))
            except httpx.HTTPError as exc:
                return await _send_bytes(send, *self._unreachable(502, "cannot be reached", exc))
            try:
                if response.status_code >= 400:
                    payload = await _read_limited(response)
                    shaped = shaped_error(response.status_code, payload, self.base)
                    return await _send_bytes(send, response.status_code, shaped)
                pump = asyncio.ensure_future(self._pump(response, send))
                watch = asyncio.ensure_future(_until_disconnect(receive))
                done, pending = await asyncio.wait(
                    {pump, watch}, return_when=asyncio.FIRST_COMPLETED
                )
                for task in pending:
                    task.cancel()
                if pump in done:
                    pump.result()
            finally:
                await response.aclose()

    def _unreachable(self, status: int, what: str, exc: Exception) -> tuple[int, bytes]:
        message = (
            f"the remote engine at {self.base} {what} ({type(exc).__name__}: {exc}); check that "
            "it is running and the URL given to --remote"
        )
        return openai_error(status, message, "remote_unreachable")

    async def _pump(self, response: Any, send: Send) -> None:
        headers = [
            (k.encode("latin-1"), v.encode("latin-1"))
            for k, v in response.headers.multi_items()
            if k.lower() not in HOP_HEADERS
        ]
        await send(
            {"type": "http.response.start", "status": response.status_code, "headers": headers}
        )
        streaming = response.headers.get("content-type", "").startswith("text/event-stream")
        try:
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except self.httpx.HTTPError as exc:
            if streaming:  # the status is sent: say what went wrong inside the stream
                _, error = self._unreachable(502, "stopped answering", exc)
                tail = b"data: " + error + b"\n\ndata: [DONE]\n\n"
                await send({"type": "http.response.body", "body": tail, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _read_limited(response: Any) -> bytes:
    data = b""
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) > MAX_ERROR_BYTES:
            break
    return data[:MAX_ERROR_BYTES]


def install_remote_proxy(app: FastAPI, engine: Engine) -> None:
    """Forward what the router sends to the remote engine (when one is configured).

    Call it before `install_limits`, so that it sits inside the API key and body limit checks.
    """
    if engine.settings.remote_url is not None:
        app.add_middleware(RemoteProxy, engine=engine)

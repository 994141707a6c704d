"""The server chat client: talks to any OpenAI-compatible server (`llmedge serve` among them)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import httpx

from llmedge import ChatMessage, GenerationChunk, ModelNotFoundError, SamplingParams
from llmedge.errors import RemoteServerError
from tui.client import ModelInfo

# OpenAI's own sampling fields are always sent; llama.cpp's extras only when changed, so that
# servers which refuse unknown fields still work with the defaults.
_OPENAI_FIELDS = (
    "max_tokens",
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "seed",
)
_EXTRA_FIELDS = ("top_k", "min_p", "repeat_penalty")
_DEFAULTS = SamplingParams()


def api_base(url: str) -> str:
    """The `/v1` base of a server address; a bare `http://host:port` gets `/v1` added."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RemoteServerError(f"{url!r} is not a server address; pass --url http://HOST:PORT/v1")
    base = url.strip().rstrip("/")
    return base if parts.path.strip("/") else base + "/v1"


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text.strip()[:200] or response.reason_phrase


def _check(response: httpx.Response, base: str) -> None:
    if response.status_code == 401:
        raise RemoteServerError(
            f"{base} refused the API key; pass --api-key KEY (or set LLMEDGE_API_KEY)"
        )
    if response.status_code >= 400:
        raise RemoteServerError(
            f"{base} answered {response.status_code}: {_error_message(response)}"
        )


def pick_model(name: str | None, available: Sequence[str], base: str) -> str:
    """The server model `name` means: an exact id, or the first whose name part matches."""
    if not available:
        raise RemoteServerError(f"{base} has no models; run `llmedge pull` on the server's machine")
    if name is None:
        return available[0]
    for model in available:
        if model == name or model.partition(":")[0] == name:
            return model
    raise ModelNotFoundError(name, f"the server has: {', '.join(available)}")


class RemoteClient:
    """A `ChatClient` over HTTP: `/v1/models` and streamed `/v1/chat/completions`."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        timeout_s: float = 600.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base = api_base(url)
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = httpx.Timeout(timeout_s, connect=10.0)
        self._transport = transport  # a test's scripted server; None: the network
        self._http: httpx.AsyncClient | None = None

    @property
    def where(self) -> str:
        return self.base

    def _client(self) -> httpx.AsyncClient:
        # Made on first use, so that it belongs to the event loop the app runs on.
        if self._http is None:
            self._http = httpx.AsyncClient(
                headers=self._headers, timeout=self._timeout, transport=self._transport
            )
        return self._http

    def _unreachable(self, exc: httpx.HTTPError) -> RemoteServerError:
        if isinstance(exc, httpx.ConnectError):
            return RemoteServerError(
                f"cannot reach {self.base} ({exc}); start one with `llmedge serve` or check --url"
            )
        return RemoteServerError(
            f"the connection to {self.base} failed ({type(exc).__name__}: {exc}); try again"
        )

    def models_now(self) -> list[str]:
        """The server's models, asked synchronously (to fail early, before the app starts)."""
        try:
            response = httpx.get(f"{self.base}/models", headers=self._headers, timeout=10.0)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        return self._model_ids(response)

    def _model_ids(self, response: httpx.Response) -> list[str]:
        _check(response, self.base)
        try:
            return [str(item["id"]) for item in response.json()["data"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise RemoteServerError(f"{self.base}/models is not an OpenAI model list") from exc

    async def models(self) -> list[str]:
        try:
            response = await self._client().get(f"{self.base}/models")
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        return self._model_ids(response)

    async def open(self, name: str) -> ModelInfo:
        ref = pick_model(name, await self.models(), self.base)
        tag = ref.partition(":")[2]
        return ModelInfo(
            ref=ref, backend=f"server {urlsplit(self.base).netloc}", quantization=tag or None
        )

    def _body(
        self, model: str, messages: Sequence[ChatMessage], params: SamplingParams
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        body.update(
            {k: getattr(params, k) for k in _OPENAI_FIELDS if getattr(params, k) is not None}
        )
        body.update(
            {
                k: getattr(params, k)
                for k in _EXTRA_FIELDS
                if getattr(params, k) != getattr(_DEFAULTS, k)
            }
        )
        if params.stop:
            body["stop"] = list(params.stop)
        return body

    async def stream(
        self, model: str, messages: Sequence[ChatMessage], params: SamplingParams
    ) -> AsyncIterator[GenerationChunk]:
        url = f"{self.base}/chat/completions"
        started = time.monotonic()
        running = GenerationChunk(text="")
        first_at: float | None = None
        try:
            async with self._client().stream(
                "POST", url, json=self._body(model, messages, params)
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    _check(response, self.base)
                async for event in _events(response):
                    now = time.monotonic()
                    text = _delta_text(event)
                    if text and first_at is None:
                        first_at = now
                    running = _merge(running, event, started, first_at, now)
                    if text:
                        yield replace(running, text=text, finish_reason=None)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        if running.finish_reason is None:
            raise RemoteServerError(f"{self.base} ended the answer before it finished")
        yield replace(running, text="")

    async def count_tokens(self, model: str, messages: Sequence[ChatMessage]) -> int | None:
        # OpenAI's API has no tokenizer endpoint; usage arrives with each answer.
        return 0 if not messages else None

    def memory_bytes(self) -> int | None:
        return None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None


async def _events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The JSON objects of a server-sent event stream, up to `[DONE]`."""
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            event = json.loads(data)
        except ValueError:
            raise RemoteServerError(
                f"the server sent an event that is not JSON: {data[:80]}"
            ) from None
        if isinstance(event, dict) and "error" in event:
            error = event["error"]
            message = error.get("message") if isinstance(error, dict) else error
            raise RemoteServerError(f"the server stopped the answer: {message}")
        if isinstance(event, dict):
            yield event


def _delta_text(event: dict[str, Any]) -> str:
    choices = event.get("choices") or [{}]
    return str((choices[0].get("delta") or {}).get("content") or "")


def _merge(
    running: GenerationChunk,
    event: dict[str, Any],
    started: float,
    first_at: float | None,
    now: float,
) -> GenerationChunk:
    """The running telemetry after one event: counted here, replaced by the server's own."""
    chunk = running
    if first_at is not None and _delta_text(event):
        generated = running.generated_tokens + 1
        decode_s = now - first_at
        chunk = replace(
            running,
            generated_tokens=generated,
            time_to_first_token_s=first_at - started,
            tokens_per_s=(generated - 1) / decode_s if generated > 1 and decode_s > 0 else None,
        )
    choices = event.get("choices") or [{}]
    finish = choices[0].get("finish_reason")
    if finish:  # tool_calls, content_filter: finished all the same
        chunk = replace(chunk, finish_reason="length" if finish == "length" else "stop")
    timings = event.get("timings") or {}
    if timings:
        cached = int(timings.get("cache_n") or 0)
        chunk = replace(
            chunk,
            prompt_tokens=int(timings.get("prompt_n") or 0) + cached,
            cached_tokens=cached,
            generated_tokens=int(timings.get("predicted_n") or chunk.generated_tokens),
            tokens_per_s=timings.get("predicted_per_second") or chunk.tokens_per_s,
            prompt_tokens_per_s=timings.get("prompt_per_second"),
            time_to_first_token_s=timings.get("time_to_first_token_s")
            or chunk.time_to_first_token_s,
        )
    usage = event.get("usage") or {}
    if usage:
        chunk = replace(
            chunk,
            prompt_tokens=int(usage.get("prompt_tokens") or chunk.prompt_tokens),
            generated_tokens=int(usage.get("completion_tokens") or chunk.generated_tokens),
        )
    return chunk

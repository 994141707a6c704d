"""OpenAI-compatible routes: /v1/models, /v1/chat/completions, /v1/completions."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse

from llmedge import (
    Engine,
    GenerationChunk,
    GenerationStream,
    LlmedgeError,
    Manifest,
    PreparedPrompt,
)
from server.schemas import ChatCompletionRequest, CompletionRequest, error_body

router = APIRouter(prefix="/v1")


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _created(manifest: Manifest) -> int:
    return int(datetime.fromisoformat(manifest.created_at).timestamp())


def _model_object(manifest: Manifest) -> dict[str, Any]:
    return {
        "id": manifest.ref,
        "object": "model",
        "created": _created(manifest),
        "owned_by": "llmedge",
    }


@router.get("/models")
async def list_models(request: Request) -> dict[str, Any]:
    manifests = await run_in_threadpool(_engine(request).store.manifests)
    return {"object": "list", "data": [_model_object(m) for m in manifests]}


@router.get("/models/{name:path}")
async def get_model(name: str, request: Request) -> dict[str, Any]:
    return _model_object(await run_in_threadpool(_engine(request).resolve, name))


def _usage(last: GenerationChunk) -> dict[str, Any]:
    return {
        "prompt_tokens": last.prompt_tokens,
        "completion_tokens": last.generated_tokens,
        "total_tokens": last.prompt_tokens + last.generated_tokens,
        "prompt_tokens_details": {"cached_tokens": last.cached_tokens},
    }


def _timings(last: GenerationChunk) -> dict[str, Any]:
    """llama-server's `timings` extension: what the answer cost."""
    return {
        "prompt_n": last.prompt_tokens - last.cached_tokens,
        "cache_n": last.cached_tokens,
        "predicted_n": last.generated_tokens,
        "prompt_per_second": last.prompt_tokens_per_s,
        "predicted_per_second": last.tokens_per_s,
        "time_to_first_token_s": last.time_to_first_token_s,
    }


def _finish(chunk: GenerationChunk) -> str | None:
    # A cancelled stream has no reader left; "stop" keeps the field within OpenAI's values.
    return "stop" if chunk.finish_reason == "cancelled" else chunk.finish_reason


class _Shape:
    """How one endpoint's objects look: chat.completion(.chunk) or text_completion."""

    def __init__(self, chat: bool, model: str) -> None:
        self.chat = chat
        self.model = model
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())

    def envelope(self, object_: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": object_,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "llmedge",
            "choices": choices,
        }

    def delta_choice(
        self, text: str | None, finish: str | None, role: bool = False
    ) -> dict[str, Any]:
        if not self.chat:
            return {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
        delta: dict[str, Any] = {} if text is None else {"content": text}
        if role:
            delta["role"] = "assistant"
        return {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}

    def stream_object(self) -> str:
        return "chat.completion.chunk" if self.chat else "text_completion"


async def _respond(
    request: Request,
    body: ChatCompletionRequest | CompletionRequest,
    prepare: Callable[[Engine], PreparedPrompt],
) -> Any:
    engine = _engine(request)
    prompt = await run_in_threadpool(prepare, engine)
    shape = _Shape(isinstance(body, ChatCompletionRequest), prompt.model.manifest.ref)
    stream = engine.start(prompt)  # a full queue answers 503 here, before any byte is sent
    if body.stream:
        return EventSourceResponse(_stream_events(stream, shape, body.include_usage), ping=15)
    text: list[str] = []
    last: GenerationChunk | None = None
    try:
        async for chunk in stream:
            text.append(chunk.text)
            last = chunk
    finally:
        stream.cancel()
    assert last is not None
    answer = "".join(text)
    if shape.chat:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": answer},
            "finish_reason": _finish(last),
            "logprobs": None,
        }
    else:
        choice = {"index": 0, "text": answer, "finish_reason": _finish(last), "logprobs": None}
    result = shape.envelope("chat.completion" if shape.chat else "text_completion", [choice])
    return JSONResponse({**result, "usage": _usage(last), "timings": _timings(last)})


async def _stream_events(
    stream: GenerationStream, shape: _Shape, include_usage: bool
) -> AsyncIterator[str]:
    object_ = shape.stream_object()
    if shape.chat:
        yield json.dumps(shape.envelope(object_, [shape.delta_choice("", None, role=True)]))
    try:
        async for chunk in stream:
            if chunk.text:
                yield json.dumps(shape.envelope(object_, [shape.delta_choice(chunk.text, None)]))
            if chunk.finish_reason:
                final = shape.envelope(object_, [shape.delta_choice(None, _finish(chunk))])
                final["timings"] = _timings(chunk)
                yield json.dumps(final)
                if include_usage:
                    yield json.dumps({**shape.envelope(object_, []), "usage": _usage(chunk)})
    except LlmedgeError as exc:
        yield json.dumps(error_body(str(exc), exc.error_type, exc.param, exc.code))
    finally:
        stream.cancel()  # also runs when the client disconnects and this task is cancelled
    yield "[DONE]"


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
    messages = [m.to_message() for m in body.messages]
    return await _respond(
        request, body, lambda engine: engine.prepare_chat(body.model, messages, body.params())
    )


@router.post("/completions")
async def completions(body: CompletionRequest, request: Request) -> Any:
    return await _respond(
        request, body, lambda engine: engine.prepare_text(body.model, body.prompt, body.params())
    )

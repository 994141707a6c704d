"""OpenAI-compatible routes: /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings."""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse

from llmedge import ContextLengthExceededError, InvalidRequestError, LlmedgeError, Manifest
from llmedge.prompting import json_object_grammar, schema_grammar
from server.chat_runner import ChatSpec, ChoiceEvent, ChoiceRun, Prepared, prepare_chat
from server.limits import check_messages
from server.openai_format import ChatShape, TextShape
from server.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    NamedToolChoice,
    ResponseFormat,
    error_body,
)
from server.state import ServerState, server_state

router = APIRouter(prefix="/v1", tags=["openai"])


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
    manifests = await run_in_threadpool(server_state(request).engine.store.manifests)
    return {"object": "list", "data": [_model_object(m) for m in manifests]}


@router.get("/models/{name:path}")
async def get_model(name: str, request: Request) -> dict[str, Any]:
    return _model_object(await run_in_threadpool(server_state(request).engine.resolve, name))


def check_max_tokens(state: ServerState, value: int | None, param: str) -> None:
    """A request for more tokens than the server allows is refused, not quietly cut."""
    limit = state.engine.settings.max_tokens_limit
    if value is not None and value > limit:
        raise InvalidRequestError(
            f"{param} is {value} but this server allows at most {limit}; ask for fewer, or "
            "start the server with a higher LLMEDGE_MAX_TOKENS_LIMIT",
            param=param,
        )


def format_grammar(response_format: ResponseFormat | None) -> str | None:
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return json_object_grammar()
    assert response_format.json_schema is not None
    return schema_grammar(
        response_format.json_schema.schema_, param="response_format.json_schema.schema"
    )


def _chat_spec(body: ChatCompletionRequest) -> ChatSpec:
    params = body.params()
    grammar = format_grammar(body.response_format)
    if grammar is not None:
        params = replace(params, grammar=grammar)
    choice = body.tool_choice
    return ChatSpec(
        model=body.model,
        messages=[m.to_message() for m in body.messages],
        params=params,
        tools=[t.as_dict() for t in body.tools or ()],
        tool_mode="auto" if isinstance(choice, NamedToolChoice) or choice is None else choice,
        forced_tool=choice.function.name if isinstance(choice, NamedToolChoice) else None,
        parallel_tool_calls=body.parallel_tool_calls is not False,
    )


async def _sse(
    run: ChoiceRun,
    n: int,
    first: Callable[[int], dict[str, Any]] | None,
    chunk: Callable[[ChoiceEvent], dict[str, Any]],
    usage_chunk: Callable[[int, int, int], dict[str, Any]] | None,
) -> AsyncIterator[str]:
    if first is not None:
        for index in range(n):
            yield json.dumps(first(index))
    lasts = []
    try:
        async for event in run.events():
            yield json.dumps(chunk(event))
            if event.last is not None:
                lasts.append(event.last)
        if usage_chunk is not None and lasts:
            completion = sum(last.generated_tokens for last in lasts)
            yield json.dumps(
                usage_chunk(lasts[0].prompt_tokens, completion, lasts[0].cached_tokens)
            )
    except LlmedgeError as exc:
        yield json.dumps(error_body(str(exc), exc.error_type, exc.param, exc.code))
    finally:
        run.cancel()  # also runs when the client disconnects and this task is cancelled
    yield "[DONE]"


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
    state = server_state(request)
    body.check()
    check_messages(state.engine.settings, len(body.messages))
    check_max_tokens(state, body.max_completion_tokens or body.max_tokens, "max_tokens")
    spec = _chat_spec(body)
    prepared = await state.run(body.model, lambda: prepare_chat(state.engine, spec))
    shape = ChatShape(prepared.prompt.model.manifest.ref, logprobs=bool(body.logprobs))
    run = ChoiceRun(state.engine, prepared, body.n, state.metrics)
    if body.stream:
        usage = shape.usage_chunk if body.include_usage else None
        events = _sse(run, body.n, shape.first_chunk, shape.chunk, usage)
        return EventSourceResponse(events, ping=15)
    try:
        results = await run.collect()
    finally:
        run.cancel()
    return JSONResponse(shape.completion(results))


@router.post("/completions")
async def completions(body: CompletionRequest, request: Request) -> Any:
    state = server_state(request)
    check_max_tokens(state, body.max_tokens, "max_tokens")
    prompt = await state.run(
        body.model, lambda: state.engine.prepare_text(body.model, body.prompt, body.params())
    )
    shape = TextShape(prompt.model.manifest.ref, logprobs=body.logprobs is not None)
    run = ChoiceRun(state.engine, Prepared(prompt), body.n, state.metrics)
    if body.stream:
        usage = shape.usage_chunk if body.include_usage else None
        return EventSourceResponse(_sse(run, body.n, None, shape.chunk, usage), ping=15)
    try:
        results = await run.collect()
    finally:
        run.cancel()
    return JSONResponse(shape.completion(results))


def shorten(vector: list[float], dimensions: int | None) -> list[float]:
    """The first `dimensions` values, normalised again (as Matryoshka-style models expect)."""
    if dimensions is None:
        return vector
    if dimensions > len(vector):
        raise InvalidRequestError(
            f"dimensions is {dimensions} but the model's vectors have {len(vector)}",
            param="dimensions",
        )
    head = vector[:dimensions]
    norm = math.sqrt(sum(v * v for v in head)) or 1.0
    return [v / norm for v in head]


@router.post("/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request) -> dict[str, Any]:
    state = server_state(request)
    texts = [body.input] if isinstance(body.input, str) else body.input
    manifest = await run_in_threadpool(state.engine.resolve, body.model)
    try:
        vectors, tokens = await state.run(
            body.model, lambda: state.engine.embed(manifest.ref, texts)
        )
    except ContextLengthExceededError as exc:
        raise InvalidRequestError(str(exc), param="input", code=exc.code) from exc
    data = []
    for index, vector in enumerate(vectors):
        values = shorten(vector, body.dimensions)
        if body.encoding_format == "base64":
            packed = struct.pack(f"<{len(values)}f", *values)
            embedding: Any = base64.b64encode(packed).decode()
        else:
            embedding = values
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    return {
        "object": "list",
        "data": data,
        "model": manifest.ref,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }

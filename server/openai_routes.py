"""OpenAI-compatible routes: /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import struct
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from llmedge import (
    ContextLengthExceededError,
    GenerationChunk,
    InvalidRequestError,
    LlmedgeError,
    Manifest,
)
from llmedge.prompting import json_object_grammar, schema_grammar
from server.chat_runner import (
    ChatSpec,
    ChoiceEvent,
    ChoiceResult,
    ChoiceRun,
    Prepared,
    prepare_chat,
)
from server.limits import check_messages
from server.openai_format import ChatShape, TextShape, usage_json
from server.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    NamedToolChoice,
    ResponseFormat,
    error_body,
    items_of,
)
from server.state import ServerState, server_state
from server.streaming import RunEvents

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
        repeat_calls=body.parallel_tool_calls is True,
    )


class Runs(Protocol):
    """Generations read as one stream of choice events (a ChoiceRun, or one per prompt)."""

    def events(self) -> AsyncIterator[ChoiceEvent]: ...

    def cancel(self) -> None: ...


def usage_of(lasts: Mapping[int, GenerationChunk], n: int) -> tuple[int, int, int]:
    """(prompt, completion, cached) tokens of the choices by index; each `n` consecutive
    choices share one prompt, whose tokens count once."""
    shared = {index // n: last for index, last in lasts.items()}
    prompt = sum(last.prompt_tokens for last in shared.values())
    cached = sum(last.cached_tokens for last in shared.values())
    return prompt, sum(last.generated_tokens for last in lasts.values()), cached


async def _sse(
    run: Runs,
    n: int,
    first: Callable[[int], dict[str, Any]] | None,
    chunk: Callable[[ChoiceEvent], dict[str, Any]],
    usage_chunk: Callable[[int, int, int], dict[str, Any]] | None,
    per_prompt: int | None = None,
) -> AsyncIterator[str]:
    """The SSE data lines of a stream: `n` choices, `per_prompt` of them to each prompt."""
    if first is not None:
        for index in range(n):
            yield json.dumps(first(index))
    lasts: dict[int, GenerationChunk] = {}
    try:
        async for event in run.events():
            yield json.dumps(chunk(event))
            if event.last is not None:
                lasts[event.index] = event.last
        if usage_chunk is not None and lasts:
            yield json.dumps(usage_chunk(*usage_of(lasts, per_prompt or n)))
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
    run = await state.start(lambda: prepare_chat(state.engine, spec), body.n)
    shape = ChatShape(run.model_ref, logprobs=bool(body.logprobs))
    if body.service_tier is not None:
        shape.echoed["service_tier"] = "default"  # the tier that served it: the only one
    if body.stream:
        usage = shape.usage_chunk if body.include_usage else None
        events = _sse(run, body.n, shape.first_chunk, shape.chunk, usage)
        return RunEvents(events, run, ping=15)
    try:
        results = await run.collect()
    finally:
        run.cancel()
    return JSONResponse(shape.completion(results))


class PromptRuns:
    """One ChoiceRun per prompt of a completions request, read one after the other; choice
    `k` of prompt `i` is index `i * n + k`, as OpenAI numbers them."""

    def __init__(
        self,
        state: ServerState,
        prepared: Sequence[Prepared],
        n: int,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.n = n
        self.runs: list[ChoiceRun] = []
        try:
            for one in prepared:
                self.runs.append(ChoiceRun(state.engine, one, n, state.metrics, loop))
        except LlmedgeError:
            self.cancel()
            raise
        finally:
            for one in prepared:  # the prompts a refusal left unstarted
                one.prompt.release()

    @property
    def model_ref(self) -> str:
        return self.runs[0].model_ref

    async def events(self) -> AsyncIterator[ChoiceEvent]:
        for i, run in enumerate(self.runs):
            async for event in run.events():
                yield replace(event, index=i * self.n + event.index)

    async def collect(self) -> list[ChoiceResult]:
        results = []
        for i, run in enumerate(self.runs):
            for result in await run.collect():
                results.append(replace(result, index=i * self.n + result.index))
        return results

    def cancel(self) -> None:
        for run in self.runs:
            run.cancel()


@router.post("/completions")
async def completions(body: CompletionRequest, request: Request) -> Any:
    state = server_state(request)
    body.check()
    check_max_tokens(state, body.max_tokens, "max_tokens")
    prompts, params, engine = body.prompts(), body.params(), state.engine
    loop = asyncio.get_running_loop()

    def start() -> PromptRuns:
        prepared: list[Prepared] = []
        try:
            for p in prompts:
                prompt = (
                    engine.prepare_text(body.model, p, params)
                    if isinstance(p, str)
                    else engine.prepare_tokens(body.model, p, params)
                )
                prepared.append(Prepared(prompt))
        except BaseException:
            for one in prepared:
                one.prompt.release()
            raise
        return PromptRuns(state, prepared, body.n, loop)

    runs = await state.run(start)
    shape = TextShape(runs.model_ref, logprobs=body.logprobs is not None)
    # echo: each answer starts with its prompt (text prompts only, checked above).
    echoed = [str(p) if body.echo else "" for p in prompts for _ in range(body.n)]
    if body.stream:
        usage = shape.usage_chunk if body.include_usage else None
        first = (lambda i: shape.chunk(ChoiceEvent(i, echoed[i]))) if body.echo else None
        total = len(echoed)
        return RunEvents(
            _sse(runs, total, first, shape.chunk, usage, per_prompt=body.n), runs, ping=15
        )
    try:
        results = await runs.collect()
    finally:
        runs.cancel()
    for result in results:
        result.content = echoed[result.index] + result.content
    answer = shape.completion(results)
    lasts = {r.index: r.last for r in results if r.last is not None}
    answer["usage"] = usage_json(*usage_of(lasts, body.n))
    return JSONResponse(answer)


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
    inputs = items_of(body.input)
    manifest = await run_in_threadpool(state.engine.resolve, body.model)
    try:
        vectors, tokens = await state.run(lambda: state.engine.embed(manifest.ref, inputs))
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

"""The Ollama API's generation routes, /api/chat, /api/generate and /api/embed, streaming NDJSON.

Model management (/api/tags, /api/ps, /api/show, /api/pull, /api/version) is in `ollama_models`.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from llmedge import (
    ChatMessage,
    ContextLengthExceededError,
    GenerationChunk,
    InvalidRequestError,
    LlmedgeError,
    SamplingParams,
)
from llmedge.settings import MAX_KEEP_ALIVE_S
from server.chat_runner import ChatSpec, ChoiceEvent, Prepared, prepare_chat
from server.limits import check_messages
from server.ollama_models import router as models_router
from server.ollama_schemas import (
    ChatRequest,
    EmbedRequest,
    GenerateRequest,
    LegacyEmbeddingRequest,
    chat_messages,
    parse_options,
)
from server.openai_routes import check_max_tokens, shorten
from server.state import ServerState, server_state
from server.streaming import RunLines

router = APIRouter(prefix="/api", tags=["ollama"])
router.include_router(models_router)
NDJSON = "application/x-ndjson"


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


_DURATION = re.compile(r"(-?\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def keep_alive_seconds(value: float | str | None) -> float | None:
    """Ollama's keep_alive (seconds, or a duration such as "5m", "1h30m"; negative: forever)."""
    if value is None:
        return None
    if isinstance(value, str) and not re.fullmatch(r"-?\d+(\.\d+)?", value.strip()):
        parts = _DURATION.findall(value.strip())
        if not parts or "".join(n + u for n, u in parts) != value.strip():
            raise InvalidRequestError(
                f'keep_alive {value!r} is not a duration such as 300, "5m" or "1h"',
                param="keep_alive",
            )
        seconds = sum(float(n) * _UNIT_S[u] for n, u in parts)
    else:
        seconds = float(value)
    if math.isnan(seconds):
        raise InvalidRequestError("keep_alive is not a number", param="keep_alive")
    # Negative, or past any clock (MAX_KEEP_ALIVE_S): until the model is evicted.
    return -1.0 if seconds < 0 or seconds > MAX_KEEP_ALIVE_S else seconds


def _stats(last: GenerationChunk | None, started: float, load_s: float) -> dict[str, Any]:
    """The timing fields of Ollama's final object, in nanoseconds."""
    stats: dict[str, Any] = {"total_duration": int((time.perf_counter() - started) * 1e9)}
    stats["load_duration"] = int(load_s * 1e9)
    if last is None:
        return stats
    decode_s = (last.generated_tokens - 1) / last.tokens_per_s if last.tokens_per_s else 0.0
    stats.update(
        prompt_eval_count=last.prompt_tokens,
        prompt_eval_duration=int((last.time_to_first_token_s or 0.0) * 1e9),
        eval_count=last.generated_tokens,
        eval_duration=int(decode_s * 1e9),
    )
    return stats


def _logprobs(event: ChoiceEvent) -> list[dict[str, Any]]:
    return [
        {
            "token": item.token,
            "logprob": item.logprob,
            "top_logprobs": [{"token": t, "logprob": lp} for t, lp in item.top],
        }
        for item in event.logprobs
    ]


Shape = Callable[[str, list[dict[str, Any]], bool], dict[str, Any]]


async def _answer(
    state: ServerState,
    prepare: Callable[[], Prepared],
    model: str,
    stream: bool,
    shape: Shape,
) -> Any:
    """Run one generation; answer with NDJSON objects as it goes, or with one object at the end."""
    started = time.perf_counter()
    loaded = {e.manifest.ref for e in state.engine.loaded()}
    run = await state.start(prepare)
    ref = run.model_ref
    load_s = 0.0 if ref in loaded else time.perf_counter() - started
    logprobs_wanted = run.prepared.prompt.params.logprobs

    def final(event: ChoiceEvent, text: str, calls: list[dict[str, Any]]) -> dict[str, Any]:
        body = {"model": ref, "created_at": now_rfc3339(), **shape(text, calls, True)}
        reason = "length" if event.finish == "length" else "stop"
        stats = _stats(event.last, started, load_s)
        return {**body, "done": True, "done_reason": reason, **stats}

    def call_json(event: ChoiceEvent) -> list[dict[str, Any]]:
        return [
            {"function": {"name": c.name, "arguments": json.loads(c.arguments)}}
            for c in event.calls
        ]

    if not stream:
        text, last_event = "", None
        calls: list[dict[str, Any]] = []
        logprobs: list[dict[str, Any]] = []
        try:
            async for event in run.events():
                text, calls = text + event.content, calls + call_json(event)
                logprobs += _logprobs(event)
                last_event = event
        finally:
            run.cancel()
        if last_event is None or last_event.finish is None:
            raise LlmedgeError(f"{ref} ended the answer without finishing it")
        body = final(last_event, text, calls)
        if logprobs_wanted:
            body["logprobs"] = logprobs
        return JSONResponse(body)

    async def lines() -> AsyncIterator[str]:
        try:
            async for event in run.events():
                if event.finish:
                    body = final(event, event.content, call_json(event))
                else:
                    body = {
                        "model": ref,
                        "created_at": now_rfc3339(),
                        **shape(event.content, call_json(event), False),
                        "done": False,
                    }
                if logprobs_wanted:
                    body["logprobs"] = _logprobs(event)
                yield json.dumps(body) + "\n"
        except LlmedgeError as exc:
            yield json.dumps({"error": str(exc)}) + "\n"
        finally:
            run.cancel()

    return RunLines(lines(), run, media_type=NDJSON)


def within_num_ctx(prepared: Prepared, num_ctx: int | None) -> Prepared:
    """The prompt held to the context the request asked for: `num_ctx` up to the context the
    model is loaded with (a larger one cannot be had without reloading it: 400)."""
    prompt = prepared.prompt
    loaded = prompt.model.model.ctx_tokens
    if num_ctx is None or num_ctx == loaded:
        return prepared
    try:
        if num_ctx > loaded:
            raise InvalidRequestError(
                f"options.num_ctx is {num_ctx} but {prompt.model.manifest.ref} is served with "
                f"{loaded} tokens of context; ask for at most {loaded}, or start the server "
                f"with `llmedge serve --ctx {num_ctx}`",
                param="options.num_ctx",
            )
        if len(prompt.tokens) >= num_ctx:
            raise ContextLengthExceededError(len(prompt.tokens), num_ctx)
    except InvalidRequestError:
        prompt.release()
        raise
    room = num_ctx - len(prompt.tokens)
    params = replace(prompt.params, max_tokens=min(prompt.params.max_tokens or room, room))
    return replace(prepared, prompt=replace(prompt, params=params))


def _checked(
    body: ChatRequest | GenerateRequest, request: Request
) -> tuple[ServerState, SamplingParams, float | None]:
    state = server_state(request)
    keep = keep_alive_seconds(body.keep_alive)
    params = body.params()
    check_max_tokens(state, params.max_tokens, "options.num_predict")
    return state, params, keep


async def _load_only(
    state: ServerState, model: str, key: str, keep_alive_s: float | None
) -> JSONResponse:
    """Ollama's way to load a model, or with keep_alive 0 to unload it: nothing to answer."""
    if keep_alive_s == 0:
        manifest = await run_in_threadpool(state.engine.resolve, model)
        await run_in_threadpool(state.engine.expire, model)
        reason = "unload"
    else:
        manifest = await state.run(lambda: state.engine.load(model, keep_alive_s).manifest)
        reason = "load"
    body: dict[str, Any] = {"model": manifest.ref, "created_at": now_rfc3339(), "done": True}
    body["done_reason"] = reason
    body[key] = {"role": "assistant", "content": ""} if key == "message" else ""
    return JSONResponse(body)


@router.post("/chat")
async def chat(body: ChatRequest, request: Request) -> Any:
    state, params, keep = _checked(body, request)
    if not body.messages:
        return await _load_only(state, body.model, "message", keep)
    check_messages(state.engine.settings, len(body.messages))
    spec = ChatSpec(
        model=body.model,
        messages=chat_messages(body.messages),
        params=params,
        tools=[t.as_dict() for t in body.tools or ()],
        keep_alive_s=keep,
    )

    def shape(text: str, calls: list[dict[str, Any]], done: bool) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if calls:
            message["tool_calls"] = calls
        return {"message": message}

    return await _answer(
        state,
        lambda: within_num_ctx(prepare_chat(state.engine, spec), body.num_ctx),
        body.model,
        body.stream,
        shape,
    )


@router.post("/generate")
async def generate(body: GenerateRequest, request: Request) -> Any:
    state, params, keep = _checked(body, request)
    if not body.prompt and not body.system:
        return await _load_only(state, body.model, "response", keep)
    engine = state.engine

    def prepare() -> Prepared:
        if body.raw:
            return Prepared(
                engine.prepare_text(engine.lease(body.model, keep), body.prompt, params)
            )
        system = [ChatMessage("system", body.system)] if body.system else []
        messages = [*system, ChatMessage("user", body.prompt)]
        return prepare_chat(engine, ChatSpec(body.model, messages, params, keep_alive_s=keep))

    def shape(text: str, calls: list[dict[str, Any]], done: bool) -> dict[str, Any]:
        return {"response": text}

    return await _answer(
        state, lambda: within_num_ctx(prepare(), body.num_ctx), body.model, body.stream, shape
    )


async def _embed(
    state: ServerState,
    model: str,
    texts: list[str],
    keep: float | str | None,
    truncate: bool = False,
    num_ctx: int | None = None,
) -> tuple[str, list[list[float]], int]:
    keep_alive_s = keep_alive_seconds(keep)
    manifest = await run_in_threadpool(state.engine.resolve, model)

    def work() -> tuple[list[list[float]], int]:
        with state.engine.lease(manifest.ref, keep_alive_s) as lease:
            served = lease.model.ctx_tokens
            if num_ctx is not None and num_ctx > served:
                raise InvalidRequestError(
                    f"options.num_ctx is {num_ctx} but {manifest.ref} is served with "
                    f"{served} tokens of context; ask for at most that",
                    param="options.num_ctx",
                )
            return state.engine.embed(manifest.ref, texts, truncate=truncate, ctx_tokens=num_ctx)

    vectors, tokens = await state.run(work)
    return manifest.ref, vectors, tokens


@router.post("/embed")
async def embed(body: EmbedRequest, request: Request) -> dict[str, Any]:
    started = time.perf_counter()
    state = server_state(request)
    options = parse_options(body.options)
    texts = [body.input] if isinstance(body.input, str) else body.input
    # Ollama cuts an input longer than the context unless told not to.
    truncate = body.truncate is not False
    ref, vectors, tokens = await _embed(
        state, body.model, texts, body.keep_alive, truncate, options.num_ctx
    )
    return {
        "model": ref,
        "embeddings": [shorten(v, body.dimensions) for v in vectors],
        "total_duration": int((time.perf_counter() - started) * 1e9),
        "load_duration": 0,
        "prompt_eval_count": tokens,
    }


@router.post("/embeddings")
async def embeddings(body: LegacyEmbeddingRequest, request: Request) -> dict[str, Any]:
    """The older single-text form of /api/embed."""
    state = server_state(request)
    options = parse_options(body.options)
    _, vectors, _ = await _embed(
        state, body.model, [body.prompt], body.keep_alive, num_ctx=options.num_ctx
    )
    return {"embedding": vectors[0]}

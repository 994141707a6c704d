"""The Anthropic Messages API: `POST /v1/messages` (whole, or streamed as Anthropic's typed SSE
events) and `POST /v1/messages/count_tokens`, over the same chat runner as the other APIs.

The `anthropic-version` and `anthropic-beta` headers are accepted and not needed: there is one
version of these routes. Errors leave as Anthropic's `{"type": "error", "error": {...}}`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sse_starlette import ServerSentEvent

from llmedge import (
    ContextLengthExceededError,
    GenerationChunk,
    LlmedgeError,
    SamplingParams,
    ToolCall,
)
from server.anthropic_schemas import CountTokensRequest, MessagesRequest
from server.chat_runner import ChoiceEvent, ChoiceRun, Finish, prepare_chat
from server.openai_routes import check_max_tokens
from server.state import server_state
from server.streaming import RunEvents
from server.wire import anthropic_error_type

router = APIRouter(prefix="/v1", tags=["anthropic"])


def tool_use_id(call: ToolCall) -> str:
    """Anthropic's id shape for a call (`toolu_…`)."""
    return "toolu_" + call.id.removeprefix("call_")


def tool_use_block(call: ToolCall) -> dict[str, Any]:
    return {
        "type": "tool_use",
        "id": tool_use_id(call),
        "name": call.name,
        "input": json.loads(call.arguments),
    }


def stop_reason(finish: Finish, last: GenerationChunk | None) -> tuple[str, str | None]:
    """Anthropic's (stop_reason, stop_sequence) for how a generation ended."""
    if finish == "tool_calls":
        return "tool_use", None
    if finish == "length":
        return "max_tokens", None
    if last is not None and last.stop_sequence is not None:
        return "stop_sequence", last.stop_sequence
    return "end_turn", None


def usage(last: GenerationChunk | None, prompt_tokens: int) -> dict[str, Any]:
    """Anthropic counts cached prompt tokens apart from the rest of the input."""
    cached = last.cached_tokens if last is not None else 0
    return {
        "input_tokens": (last.prompt_tokens if last is not None else prompt_tokens) - cached,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": last.generated_tokens if last is not None else 0,
    }


class MessageStream:
    """The typed events of one streamed message, block by block."""

    def __init__(self, message: dict[str, Any], prompt_tokens: int) -> None:
        self.message = message
        self.prompt_tokens = prompt_tokens
        self.blocks = 0  # blocks started so far
        self.text_open = False

    @staticmethod
    def event(type_: str, **fields: Any) -> ServerSentEvent:
        return ServerSentEvent(data=json.dumps({"type": type_, **fields}), event=type_)

    def start(self) -> list[ServerSentEvent]:
        message = {**self.message, "usage": usage(None, self.prompt_tokens)}
        return [self.event("message_start", message=message), self.event("ping")]

    def _close_text(self) -> list[ServerSentEvent]:
        if not self.text_open:
            return []
        self.text_open = False
        return [self.event("content_block_stop", index=self.blocks - 1)]

    def text(self, text: str) -> list[ServerSentEvent]:
        events = []
        if not self.text_open:
            block = {"type": "text", "text": ""}
            events.append(self.event("content_block_start", index=self.blocks, content_block=block))
            self.blocks += 1
            self.text_open = True
        delta = {"type": "text_delta", "text": text}
        return [*events, self.event("content_block_delta", index=self.blocks - 1, delta=delta)]

    def call(self, call: ToolCall) -> list[ServerSentEvent]:
        index, self.blocks = self.blocks, self.blocks + 1
        opening = {**tool_use_block(call), "input": {}}
        delta = {"type": "input_json_delta", "partial_json": call.arguments}
        return [
            *self._close_text(),
            self.event("content_block_start", index=index, content_block=opening),
            self.event("content_block_delta", index=index, delta=delta),
            self.event("content_block_stop", index=index),
        ]

    def finish(self, event: ChoiceEvent) -> list[ServerSentEvent]:
        assert event.finish is not None
        reason, sequence = stop_reason(event.finish, event.last)
        delta = {"stop_reason": reason, "stop_sequence": sequence}
        return [
            *self._close_text(),
            self.event("message_delta", delta=delta, usage=usage(event.last, self.prompt_tokens)),
            self.event("message_stop"),
        ]


async def _events(run: ChoiceRun, stream: MessageStream) -> AsyncIterator[ServerSentEvent]:
    for event in stream.start():
        yield event
    try:
        async for choice in run.events():
            pieces = stream.text(choice.content) if choice.content else []
            for call in choice.calls:
                pieces.extend(stream.call(call))
            if choice.finish:
                pieces.extend(stream.finish(choice))
            for piece in pieces:
                yield piece
    except LlmedgeError as exc:
        error = {"type": anthropic_error_type(exc.http_status), "message": str(exc)}
        yield MessageStream.event("error", error=error)
    finally:
        run.cancel()


@router.post("/messages")
async def create_message(body: MessagesRequest, request: Request) -> Any:
    state = server_state(request)
    check_max_tokens(state, body.max_tokens, "max_tokens")
    spec = body.chat_spec(body.sampling())
    run = await state.start(lambda: prepare_chat(state.engine, spec))
    prepared = run.prepared
    message: dict[str, Any] = {
        "id": "msg_" + uuid.uuid4().hex[:24],
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": prepared.prompt.model.manifest.ref,
        "stop_reason": None,
        "stop_sequence": None,
    }
    prompt_tokens = len(prepared.prompt.tokens)
    if body.stream:
        return RunEvents(_events(run, MessageStream(message, prompt_tokens)), run, ping=15)
    try:
        (result,) = await run.collect()
    finally:
        run.cancel()
    if result.content or not result.calls:
        message["content"].append({"type": "text", "text": result.content})
    message["content"].extend(tool_use_block(call) for call in result.calls)
    message["stop_reason"], message["stop_sequence"] = stop_reason(result.finish, result.last)
    message["usage"] = usage(result.last, prompt_tokens)
    return JSONResponse(message)


@router.post("/messages/count_tokens")
async def count_tokens(body: CountTokensRequest, request: Request) -> dict[str, int]:
    """The tokens the conversation takes as a prompt, tools and template included."""
    state = server_state(request)
    spec = body.chat_spec(SamplingParams(max_tokens=1))
    try:
        prepared = await state.run(lambda: prepare_chat(state.engine, spec))
    except ContextLengthExceededError as exc:  # counted all the same: that is the question
        return {"input_tokens": exc.prompt_tokens}
    with prepared.prompt:  # counted, not generated from
        return {"input_tokens": len(prepared.prompt.tokens)}

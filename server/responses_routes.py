"""`POST /v1/responses`: the OpenAI Responses API, stateless, streaming its typed events."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sse_starlette import ServerSentEvent

from llmedge import GenerationChunk, LlmedgeError, SamplingParams, ToolCall
from llmedge.prompting import json_object_grammar, schema_grammar
from server.chat_runner import ChatSpec, ChoiceRun, prepare_chat
from server.limits import check_messages
from server.openai_routes import check_max_tokens
from server.responses_schemas import NamedFunction, ResponsesRequest, SchemaFormat
from server.state import server_state
from server.streaming import RunEvents

router = APIRouter(prefix="/v1", tags=["openai"])


def _spec(body: ResponsesRequest) -> ChatSpec:
    params = SamplingParams(max_tokens=body.max_output_tokens, grammar=_grammar(body))
    if body.temperature is not None:
        params = replace(params, temperature=body.temperature)
    if body.top_p is not None:
        params = replace(params, top_p=body.top_p)
    choice = body.tool_choice
    return ChatSpec(
        model=body.model,
        messages=body.messages(),
        params=params,
        tools=[t.as_chat_tool() for t in body.tools or ()],
        tool_mode="auto" if isinstance(choice, NamedFunction) or choice is None else choice,
        forced_tool=choice.name if isinstance(choice, NamedFunction) else None,
        parallel_tool_calls=body.parallel_tool_calls is not False,
        repeat_calls=body.parallel_tool_calls is True,
    )


def _grammar(body: ResponsesRequest) -> str | None:
    fmt = body.text.format if body.text else None
    if isinstance(fmt, SchemaFormat):
        return schema_grammar(fmt.schema_, param="text.format.schema")
    return json_object_grammar() if fmt is not None and fmt.type == "json_object" else None


class ResponseBuilder:
    """Builds one response object and the events that stream it."""

    def __init__(self, body: ResponsesRequest, model: str) -> None:
        self.body = body
        self.model = model
        self.id = "resp_" + uuid.uuid4().hex
        self.created_at = int(time.time())
        self.output: list[dict[str, Any]] = []
        self.message: dict[str, Any] | None = None
        self.sequence = 0
        self.last: GenerationChunk | None = None

    def event(self, type_: str, **fields: Any) -> ServerSentEvent:
        data = {"type": type_, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return ServerSentEvent(data=json.dumps(data), event=type_)

    def response(self, status: str) -> dict[str, Any]:
        body, last = self.body, self.last
        text = body.text.format if body.text else None
        fmt = text.model_dump(by_alias=True, exclude_none=True) if text else {"type": "text"}
        incomplete = status == "incomplete"
        usage = None
        if last is not None:
            usage = {
                "input_tokens": last.prompt_tokens,
                "input_tokens_details": {
                    "cached_tokens": last.cached_tokens,
                    "cache_write_tokens": 0,  # the cache is written as a side effect, uncounted
                },
                "output_tokens": last.generated_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": last.prompt_tokens + last.generated_tokens,
            }
        choice = body.tool_choice
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "model": self.model,
            "output": self.output,
            "instructions": body.instructions,
            "max_output_tokens": body.max_output_tokens,
            "temperature": body.temperature,
            "top_p": body.top_p,
            "tools": [t.echo() for t in body.tools or ()],
            "tool_choice": choice.model_dump()
            if isinstance(choice, NamedFunction)
            else choice or "auto",
            "parallel_tool_calls": body.parallel_tool_calls is not False,
            "text": {"format": fmt},
            "truncation": "disabled",
            "store": False,
            "metadata": body.metadata or {},
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "error": None,
            **({"usage": usage} if usage is not None else {}),  # the schema has no null usage
            **body.echoed(),
        }

    def open_message(self) -> list[ServerSentEvent]:
        self.message = {
            "type": "message",
            "id": "msg_" + uuid.uuid4().hex,
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        self.output.append(self.message)
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        self.message["content"].append(part)
        where = self._where()
        return [
            self.event(
                "response.output_item.added",
                output_index=where["output_index"],
                item={**self.message, "content": []},
            ),
            self.event("response.content_part.added", **where, content_index=0, part=dict(part)),
        ]

    def _where(self) -> dict[str, Any]:
        assert self.message is not None
        return {"item_id": self.message["id"], "output_index": self.output.index(self.message)}

    def add_text(self, text: str) -> list[ServerSentEvent]:
        events = self.open_message() if self.message is None else []
        assert self.message is not None
        self.message["content"][0]["text"] += text
        delta = self.event(
            "response.output_text.delta", **self._where(), content_index=0, delta=text, logprobs=[]
        )
        return [*events, delta]

    def close_message(self) -> list[ServerSentEvent]:
        if self.message is None or self.message["status"] == "completed":
            return []
        message, where = self.message, self._where()
        message["status"] = "completed"
        part = message["content"][0]
        text = part["text"]
        return [
            self.event(
                "response.output_text.done", **where, content_index=0, text=text, logprobs=[]
            ),
            self.event("response.content_part.done", **where, content_index=0, part=part),
            self.event(
                "response.output_item.done", output_index=where["output_index"], item=message
            ),
        ]

    def add_call(self, call: ToolCall) -> list[ServerSentEvent]:
        events = self.close_message()
        item = {
            "type": "function_call",
            "id": "fc_" + uuid.uuid4().hex,
            "call_id": call.id,
            "name": call.name,
            "arguments": call.arguments,
            "status": "completed",
        }
        self.output.append(item)
        index = len(self.output) - 1
        where = {"item_id": item["id"], "output_index": index}
        opening = {**item, "arguments": "", "status": "in_progress"}
        return [
            *events,
            self.event("response.output_item.added", output_index=index, item=opening),
            self.event("response.function_call_arguments.delta", **where, delta=call.arguments),
            self.event(
                "response.function_call_arguments.done",
                **where,
                arguments=call.arguments,
                name=call.name,
            ),
            self.event("response.output_item.done", output_index=index, item=item),
        ]


async def _stream(run: ChoiceRun, builder: ResponseBuilder) -> AsyncIterator[ServerSentEvent]:
    yield builder.event("response.created", response=builder.response("in_progress"))
    yield builder.event("response.in_progress", response=builder.response("in_progress"))
    try:
        async for event in run.events():
            for piece in builder.add_text(event.content) if event.content else []:
                yield piece
            for call in event.calls:
                for piece in builder.add_call(call):
                    yield piece
            if event.finish:
                builder.last = event.last
                for piece in [] if builder.output else builder.open_message():
                    yield piece
                for piece in builder.close_message():
                    yield piece
                status = "incomplete" if event.finish == "length" else "completed"
                yield builder.event(f"response.{status}", response=builder.response(status))
    except LlmedgeError as exc:
        error = {"code": exc.code, "message": str(exc), "param": exc.param}
        yield builder.event("error", **error)
    finally:
        run.cancel()


@router.post("/responses")
async def create_response(body: ResponsesRequest, request: Request) -> Any:
    state = server_state(request)
    body.check()
    check_messages(
        state.engine.settings, 0 if isinstance(body.input, str) else len(body.input), "input"
    )
    check_max_tokens(state, body.max_output_tokens, "max_output_tokens")
    spec = _spec(body)
    run = await state.start(lambda: prepare_chat(state.engine, spec))
    builder = ResponseBuilder(body, run.model_ref)
    if body.stream:
        return RunEvents(_stream(run, builder), run, ping=15)
    try:
        (result,) = await run.collect()
    finally:
        run.cancel()
    builder.last = result.last
    if result.content.strip() or not result.calls:
        builder.add_text(result.content)
    builder.close_message()
    for call in result.calls:
        builder.add_call(call)
    status = "incomplete" if result.finish == "length" else "completed"
    return JSONResponse(builder.response(status))

"""Wire types of the Ollama API (`/api/*`), mapped onto llmedge's sampling and messages.

Options Ollama applies when it loads a model (`num_ctx`, `num_gpu`, …) are set when llmedge's
server starts, so a request that sends them is refused by name rather than quietly ignored.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError

from llmedge import ChatMessage, InvalidRequestError, SamplingParams, ToolCall
from llmedge.prompting import json_object_grammar, schema_grammar
from server.schemas import ChatTool, Tuning, WireModel

# Options that Ollama applies at load time, and the llmedge setting that plays their part.
_LOAD_OPTIONS = {
    "num_ctx": "--ctx",
    "num_batch": "--ctx",
    "num_gpu": "--gpu-layers",
    "main_gpu": "--gpu-layers",
    "low_vram": "--gpu-layers",
    "num_thread": "--threads",
    "f16_kv": "--ctx",
    "use_mmap": "--ctx",
    "use_mlock": "--ctx",
    "numa": "--threads",
    "vocab_only": "--ctx",
    "logits_all": "--ctx",
    "embedding_only": "--ctx",
}


class Options(Tuning):
    """The runtime options llmedge honours; any other is refused by name."""

    seed: int | None = None
    num_predict: Annotated[int, Field(ge=-2)] | None = None
    stop: list[str] | None = None


def parse_options(raw: dict[str, Any] | None) -> Options:
    for name in raw or {}:
        if name in _LOAD_OPTIONS:
            raise InvalidRequestError(
                f"options.{name} is fixed when the server starts; start it with "
                f"`llmedge serve {_LOAD_OPTIONS[name]} …` instead",
                param=f"options.{name}",
            )
    try:
        return Options.model_validate(raw or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        param = "options." + ".".join(str(part) for part in first["loc"])
        if first["type"] == "extra_forbidden":
            message = f"{param} is not supported by llmedge; remove it"
        else:
            message = f"{param}: {first['msg']}"
        raise InvalidRequestError(message, param=param) from None


class _Generating(WireModel):
    model: str = Field(min_length=1)
    stream: bool = True
    format: Literal["", "json"] | dict[str, Any] | None = None
    options: dict[str, Any] | None = None
    think: Literal[False] | None = None
    keep_alive: float | str | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None

    def params(self) -> SamplingParams:
        options = parse_options(self.options)
        # num_predict: -1 means no limit, -2 fill the context; both end at the context's end.
        limit = options.num_predict if options.num_predict and options.num_predict > 0 else None
        return SamplingParams(
            max_tokens=limit,
            stop=tuple(options.stop or ()),
            grammar=self.grammar(),
            logprobs=bool(self.logprobs),
            top_logprobs=self.top_logprobs or 0,
            seed=options.seed,
            **options.tuning(),
        )

    def grammar(self) -> str | None:
        if self.format == "json":
            return json_object_grammar()
        if isinstance(self.format, dict):
            return schema_grammar(self.format, param="format")
        return None


class OllamaFunction(WireModel):
    name: str
    arguments: dict[str, Any]


class OllamaToolCall(WireModel):
    function: OllamaFunction


class OllamaMessage(WireModel):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    tool_calls: list[OllamaToolCall] | None = None
    tool_name: str | None = None
    thinking: None = None


def chat_messages(messages: list[OllamaMessage]) -> list[ChatMessage]:
    """Ollama's messages as llmedge's: calls get ids, and each tool result the id of the earliest
    unanswered call to that tool (Ollama matches results to calls by name and order). Linear in
    the number of messages: unanswered calls wait in one queue per tool name and one overall."""
    result: list[ChatMessage] = []
    by_name: dict[str, deque[ToolCall]] = {}
    waiting: deque[ToolCall] = deque()  # every unanswered call, oldest first
    answered: set[str] = set()

    def earliest(queue: deque[ToolCall]) -> ToolCall | None:
        while queue and queue[0].id in answered:
            queue.popleft()
        return queue.popleft() if queue else None

    for i, message in enumerate(messages):
        if message.role == "tool":
            named = by_name.get(message.tool_name) if message.tool_name is not None else None
            match = (earliest(named) if named else None) or earliest(waiting)
            if match is not None:
                answered.add(match.id)
            call_id = match.id if match else None
            result.append(ChatMessage("tool", message.content, (), call_id, message.tool_name))
            continue
        calls = tuple(
            ToolCall(f"call_{i}_{k}", c.function.name, json.dumps(c.function.arguments))
            for k, c in enumerate(message.tool_calls or ())
        )
        for call in calls:
            by_name.setdefault(call.name, deque()).append(call)
            waiting.append(call)
        result.append(ChatMessage(message.role, message.content, calls))
    return result


class ChatRequest(_Generating):
    messages: list[OllamaMessage] = Field(default_factory=list)
    tools: list[ChatTool] | None = None


class GenerateRequest(_Generating):
    prompt: str = ""
    system: str | None = None
    raw: bool = False
    suffix: Literal[""] | None = None
    images: Annotated[list[str], Field(max_length=0)] | None = None


NonEmpty = Annotated[str, Field(min_length=1)]


class EmbedRequest(WireModel):
    model: str = Field(min_length=1)
    input: NonEmpty | Annotated[list[NonEmpty], Field(min_length=1, max_length=2048)]
    truncate: bool | None = None
    dimensions: Annotated[int, Field(ge=1)] | None = None
    options: dict[str, Any] | None = None
    keep_alive: float | str | None = None


class LegacyEmbeddingRequest(WireModel):
    model: str = Field(min_length=1)
    prompt: NonEmpty
    options: dict[str, Any] | None = None
    keep_alive: float | str | None = None


class ModelRequest(WireModel):
    model: str = Field(min_length=1)
    verbose: bool | None = None


class PullRequest(WireModel):
    model: str = Field(min_length=1)
    stream: bool = True
    insecure: bool | None = None

"""Wire types of the Ollama API (`/api/*`), mapped onto llmedge's sampling and messages.

Options Ollama applies when it loads a model (`num_gpu`, `num_thread`, …) are advisory here:
the server's own settings decide them. `num_ctx` is honoured up to the context the model is
loaded with. Sampling options llmedge does not implement are accepted at their neutral value
only (`mirostat: 0`, `typical_p: 1`) and refused by name otherwise.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from llmedge import ChatMessage, InvalidRequestError, SamplingParams, ToolCall
from llmedge.prompting import json_object_grammar, schema_grammar
from server.schemas import ChatTool, Tuning
from server.validation import validation_message
from server.wire import LenientModel, Seed, WireModel, advisory, field_error

# Sampling options llmedge implements only at the value that turns them off.
NEUTRAL_OPTIONS: dict[str, tuple[float, str]] = {
    "typical_p": (1.0, "typical sampling is not implemented; use top_p or min_p"),
    "tfs_z": (1.0, "tail-free sampling is not implemented; use min_p"),
    "mirostat": (0, "mirostat sampling is not implemented; use temperature and top_p"),
    "repeat_last_n": (64, "repeats are penalised over the last 64 tokens; omit it"),
    "penalize_newline": (False, "newlines are never penalised apart; omit it"),
}


class Options(Tuning):
    """The runtime options of a request."""

    seed: Seed | None = None
    num_predict: Annotated[int, Field(ge=-2)] | None = None
    stop: list[str] | None = None
    num_ctx: Annotated[int, Field(ge=1)] | None = None
    num_keep: int | None = advisory("no context shifting: an over-long prompt is refused")
    mirostat_tau: float | None = advisory("only used by mirostat, which stays off")
    mirostat_eta: float | None = advisory("only used by mirostat, which stays off")
    typical_p: float | None = None
    tfs_z: float | None = None
    mirostat: int | None = None
    repeat_last_n: int | None = None
    penalize_newline: bool | None = None
    num_batch: int | None = advisory("set by the server: llmedge serve --ctx")
    num_gpu: int | None = advisory("set by the server: llmedge serve --gpu-layers")
    main_gpu: int | None = advisory("set by the server: llmedge serve --gpu-layers")
    low_vram: bool | None = advisory("set by the server: llmedge serve --gpu-layers")
    num_thread: int | None = advisory("set by the server: llmedge serve --threads")
    f16_kv: bool | None = advisory("set by the server")
    use_mmap: bool | None = advisory("set by the server")
    use_mlock: bool | None = advisory("set by the server")
    numa: bool | None = advisory("set by the server: llmedge serve --threads")
    vocab_only: bool | None = advisory("set by the server")
    logits_all: bool | None = advisory("set by the server")
    embedding_only: bool | None = advisory("set by the server")

    @model_validator(mode="after")
    def _neutral_or_refused(self) -> Options:
        for name, (neutral, instead) in NEUTRAL_OPTIONS.items():
            value = getattr(self, name)
            if value is not None and value != neutral:
                raise field_error(name, f"{instead} (only {neutral!r} is accepted)")
        return self


def parse_options(raw: dict[str, Any] | None) -> Options:
    try:
        return Options.model_validate(raw or {})
    except ValidationError as exc:
        errors = [{**e, "loc": ("options", *e["loc"])} for e in exc.errors()]
        message, param = validation_message([dict(e) for e in errors])
        if errors[0]["type"] == "extra_forbidden":
            message = f"{param} is not an option llmedge knows; remove it"
        raise InvalidRequestError(message, param=param) from None


def _no_images(images: list[str] | None) -> list[str] | None:
    if images:
        raise ValueError(
            "images need a multimodal model, which llmedge does not serve yet; send no images"
        )
    return images


class _Generating(WireModel):
    model: str = Field(min_length=1)
    stream: bool = True
    format: Literal["", "json"] | dict[str, Any] | None = None
    options: dict[str, Any] | None = None
    think: bool | str | None = None
    keep_alive: float | str | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None

    @model_validator(mode="after")
    def _no_thinking(self) -> _Generating:
        if self.think not in (None, False):
            raise field_error("think", "the served models do not think in separate tokens; omit it")
        return self

    @property
    def num_ctx(self) -> int | None:
        return parse_options(self.options).num_ctx

    def params(self) -> SamplingParams:
        options = parse_options(self.options)
        # num_predict: -1 means no limit, -2 fill the context; both end at the context's end.
        limit = options.num_predict if options.num_predict and options.num_predict > 0 else None
        given = {*options.tuning(), *(["stop"] if options.stop else [])}
        given |= {"seed"} if options.seed is not None else set()
        return SamplingParams(
            max_tokens=limit,
            stop=tuple(options.stop or ()),
            grammar=self.grammar(),
            logprobs=bool(self.logprobs),
            top_logprobs=self.top_logprobs or 0,
            seed=options.seed,
            **options.tuning(),
            given=frozenset(given | ({"max_tokens"} if limit else set())),
        )

    def grammar(self) -> str | None:
        if self.format == "json":
            return json_object_grammar()
        if isinstance(self.format, dict):
            return schema_grammar(self.format, param="format")
        return None


class OllamaFunction(LenientModel):
    name: str
    arguments: dict[str, Any]


class OllamaToolCall(LenientModel):
    function: OllamaFunction


class OllamaMessage(LenientModel):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: list[str] | None = None
    tool_calls: list[OllamaToolCall] | None = None
    tool_name: str | None = None
    thinking: str | None = advisory("earlier thinking is not shown to the model again")

    @field_validator("images")
    @classmethod
    def _text_only(cls, images: list[str] | None) -> list[str] | None:
        return _no_images(images)


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
    refused: ClassVar[Mapping[str, str]] = {
        "template": "llmedge renders the model's own chat template; send raw: true with a "
        "prompt you formatted yourself",
        "width": "llmedge does not generate images",
        "height": "llmedge does not generate images",
        "steps": "llmedge does not generate images",
    }

    prompt: str = ""
    system: str | None = None
    raw: bool = False
    suffix: str | None = None
    images: list[str] | None = None
    context: list[int] | None = None

    @field_validator("images")
    @classmethod
    def _text_only(cls, images: list[str] | None) -> list[str] | None:
        return _no_images(images)

    @model_validator(mode="after")
    def _nothing_unsupported(self) -> GenerateRequest:
        if self.suffix:
            raise field_error("suffix", "llmedge does not fill in the middle; omit it")
        if self.context:
            raise field_error(
                "context", "llmedge returns no context to send back; use /api/chat with the "
                "whole conversation",
            )  # fmt: skip
        return self


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


class _Named(WireModel):
    """A request that names a model as `model` or, as older clients do, `name`."""

    model: str = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _name_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("model") is None and "name" in data:
            data = {**data, "model": data["name"]}
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k != "name"}
        return data


class ModelRequest(_Named):
    verbose: bool | None = None


class PullRequest(_Named):
    stream: bool = True
    insecure: bool | None = None


class CopyRequest(WireModel):
    source: str = Field(min_length=1)
    destination: str = Field(min_length=1)


class DeleteRequest(WireModel):
    model: str | None = Field(None, min_length=1)
    name: str | None = Field(None, min_length=1, description="older clients' name for `model`")

    @property
    def target(self) -> str:
        if not (self.model or self.name):
            raise InvalidRequestError("model: name the model to delete", param="model")
        return self.model or self.name or ""


class CreateRequest(WireModel):
    """A model made from a stored one with its own defaults (a new manifest, the same blob)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    model: str | None = Field(None, min_length=1)
    name: str | None = Field(None, min_length=1, description="older clients' name for `model`")
    from_: str | None = Field(None, alias="from", min_length=1)
    system: str | None = None
    template: str | None = None
    parameters: dict[str, Any] | None = None
    modelfile: str | None = Field(None, description="older clients: the Modelfile's text")
    stream: bool = True
    # Ollama's ways to make a model from uploaded files; llmedge takes models through `pull`.
    refused: ClassVar[Mapping[str, str]] = {
        "files": "put the model in the store with `llmedge pull` and create FROM it",
        "adapters": "LoRA adapters are not supported",
        "quantize": "make quantizations with `llmedge quantize MODEL --to TYPE`",
        "license": "a created model keeps its source's license; remove it",
        "messages": "a created model has no stored conversation; send the messages per request",
    }

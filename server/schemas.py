"""OpenAI wire types for the requests llmedge accepts: chat, completions, embeddings.

Every documented field is honoured, accepted as advisory, or refused by name with what to do
(server/wire.py; the table is docs/field-policy.md). Unknown top-level fields are refused, as
OpenAI does; unknown fields inside messages are ignored, as vLLM does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from llmedge import ChatMessage, InvalidRequestError, SamplingParams, ToolCall
from server.wire import LenientModel, Seed, WireModel, advisory, field_error

__all__ = ["WireModel"]

MAX_CHOICES = 8
# Prompts in one /v1/completions request; with `n`, at most this many generations start.
MAX_PROMPTS = 16
# OpenAI's rule for function names; it also keeps names safe inside grammars and prompts.
FUNCTION_NAME = r"^[a-zA-Z0-9_.-]{1,64}$"
TokenId = Annotated[int, Field(ge=0)]
TokenIds = Annotated[list[TokenId], Field(min_length=1)]
NonEmpty = Annotated[str, Field(min_length=1)]


class TextPart(LenientModel):
    """A content part; llmedge reads text only."""

    type: str
    text: str = ""

    @model_validator(mode="after")
    def _text_only(self) -> TextPart:
        if self.type not in ("text", "input_text", "output_text", "refusal"):
            raise ValueError(
                f"{self.type!r} parts need a multimodal model, which llmedge does not serve yet; "
                "send text parts only"
            )
        return self


Content = str | list[TextPart]


def content_text(content: Content | None) -> str:
    if isinstance(content, list):
        return "".join(part.text for part in content if part.type != "refusal")
    return content or ""


class FunctionCall(LenientModel):
    name: str = Field(pattern=FUNCTION_NAME)
    arguments: str


class WireToolCall(LenientModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class WireMessage(LenientModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Content | None = None
    name: str | None = None
    tool_calls: list[WireToolCall] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _tool_fields_fit_the_role(self) -> WireMessage:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id of the call it answers")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        return self

    def to_message(self) -> ChatMessage:
        calls = tuple(
            ToolCall(c.id, c.function.name, c.function.arguments) for c in self.tool_calls or ()
        )
        role = "system" if self.role == "developer" else self.role
        return ChatMessage(role, content_text(self.content), calls, self.tool_call_id, self.name)


class FunctionDefinition(WireModel):
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ChatTool(WireModel):
    type: Literal["function"]
    function: FunctionDefinition

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class NamedFunction(WireModel):
    name: str


class NamedToolChoice(WireModel):
    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class StreamOptions(WireModel):
    include_usage: bool = False
    include_obfuscation: bool | None = advisory("no obfuscation padding is sent")


class JsonSchemaFormat(WireModel):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(WireModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_with_json_schema(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema is required with type 'json_schema', and only then")
        return self


SAMPLING_FIELDS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
)


# The bounds every API puts on the sampling knobs.
Temperature = Annotated[float, Field(ge=0, le=2)]
TopP = Annotated[float, Field(gt=0, le=1)]


class Tuning(WireModel):
    """The sampling knobs the APIs share; unset ones take llmedge's defaults (SamplingParams),
    tuned for small models."""

    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    min_p: Annotated[float, Field(ge=0, le=1)] | None = None
    repeat_penalty: Annotated[float, Field(gt=0, le=10)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None

    def tuning(self) -> dict[str, Any]:
        """The knobs that were set, as SamplingParams fields."""
        return {
            name: value for name in SAMPLING_FIELDS if (value := getattr(self, name)) is not None
        }


def parse_logit_bias(raw: dict[str, float] | None) -> tuple[tuple[int, float], ...]:
    """OpenAI's {"token id": bias} as (id, bias) pairs; the bias is added to the logit."""
    pairs = []
    for key, bias in (raw or {}).items():
        if not key.isdigit():
            raise ValueError(f'keys are token ids such as "198", not {key!r}')
        if not -100 <= bias <= 100:
            raise ValueError(f"biases are between -100 and 100, not {bias}")
        pairs.append((int(key), float(bias)))
    return tuple(sorted(pairs))


class SamplingFields(Tuning):
    model: str | None = Field(None, description="stored model; the server's default when omitted")
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    seed: Seed | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, Field(ge=1, le=MAX_CHOICES)] = 1
    logit_bias: dict[str, float] | None = None
    speculative: bool | None = Field(
        None,
        description="llmedge: false turns off guessing tokens ahead for this request (the "
        "answer is the same either way; only its speed changes)",
    )
    user: str | None = advisory("an end-user id; llmedge keeps no per-user state")

    @field_validator("logit_bias")
    @classmethod
    def _bias_by_token_id(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        parse_logit_bias(value)
        return value

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> SamplingFields:
        if self.stream_options is not None and not self.stream:
            # OpenAI's answer too: the options only shape a stream.
            raise field_error("stream_options", "only allowed when stream is true")
        return self

    def sampling(self, max_tokens: int | None = None) -> SamplingParams:
        stop = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        limit = max_tokens or self.max_tokens
        given = {*self.tuning(), *(["max_tokens"] if limit else []), *(["stop"] if stop else [])}
        return SamplingParams(
            max_tokens=limit,
            stop=tuple(stop),
            seed=self.seed,
            logit_bias=parse_logit_bias(self.logit_bias),
            speculative=self.speculative is not False,
            **self.tuning(),
            given=frozenset(given | ({"seed"} if self.seed is not None else set())),
        )

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ServiceHints(WireModel):
    """OpenAI's hints about how a hosted service should treat a request: none applies here."""

    service_tier: str | None = advisory("there is one tier; answered as 'default'")
    prompt_cache_key: str | None = advisory("prefixes are cached automatically, per slot")
    prompt_cache_retention: str | None = advisory("caches live as long as the loaded model")
    prompt_cache_options: dict[str, Any] | None = advisory("caching is automatic")
    safety_identifier: str | None = advisory("an end-user id for abuse detection; none runs")


class ChatCompletionRequest(SamplingFields, ServiceHints):
    refused: ClassVar[Mapping[str, str]] = {
        "audio": "llmedge answers in text only; omit it",
        "functions": "the functions API is retired; send the same schemas as tools",
        "function_call": "the functions API is retired; use tool_choice",
        "web_search_options": "llmedge has no web search; omit it, or give the model a tool",
        "moderation": "llmedge runs no moderation; omit it",
    }

    messages: list[WireMessage] = Field(min_length=1)
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    response_format: ResponseFormat | None = None
    tools: list[ChatTool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    store: bool | None = None
    modalities: list[Literal["text"]] | None = None
    metadata: dict[str, str] | None = advisory("tags for stored completions; none are stored")
    reasoning_effort: str | None = advisory("served models do not reason in hidden tokens")
    verbosity: Literal["low", "medium", "high"] | None = advisory("not a sampling control")
    prediction: dict[str, Any] | None = advisory("predicted outputs do not speed decoding here")

    def check(self) -> None:
        """Rules across fields, refused with the field they concern."""
        if self.store:
            raise InvalidRequestError(
                "store: llmedge keeps no completions; omit it or send false", param="store"
            )
        if self.top_logprobs and not self.logprobs:
            raise InvalidRequestError("top_logprobs needs logprobs: true", param="top_logprobs")
        if isinstance(self.tool_choice, NamedToolChoice):
            names = {tool.function.name for tool in self.tools or ()}
            if self.tool_choice.function.name not in names:
                raise InvalidRequestError(
                    f"tool_choice names {self.tool_choice.function.name!r}, "
                    "which is not among the tools",
                    param="tool_choice",
                )
        elif self.tool_choice == "required" and not self.tools:
            raise InvalidRequestError("tool_choice 'required' needs tools", param="tool_choice")

    def params(self) -> SamplingParams:
        params = self.sampling(self.max_completion_tokens)
        if not self.logprobs:
            return params
        return SamplingParams(
            **{**params.__dict__, "logprobs": True, "top_logprobs": self.top_logprobs or 0}
        )


Prompt = (
    NonEmpty
    | Annotated[list[NonEmpty], Field(min_length=1)]
    | TokenIds
    | Annotated[list[TokenIds], Field(min_length=1)]
)


class CompletionRequest(SamplingFields):
    prompt: Prompt
    echo: bool = False
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None
    best_of: Literal[1] | None = None
    refused: ClassVar[Mapping[str, str]] = {
        "suffix": "llmedge does not fill in the middle; put the text before the gap in prompt",
    }

    def prompts(self) -> list[str | list[int]]:
        """Each prompt of the request: text, or token ids."""
        return items_of(self.prompt)

    def check(self) -> None:
        prompts = self.prompts()
        if len(prompts) * self.n > MAX_PROMPTS:
            raise InvalidRequestError(
                f"prompt: {len(prompts)} prompts with n={self.n} would start more than "
                f"{MAX_PROMPTS} generations; send fewer prompts per request",
                param="prompt",
            )
        if self.echo and self.logprobs is not None:
            raise InvalidRequestError(
                "echo with logprobs would need the prompt's log-probabilities, which llmedge "
                "does not compute; ask for one of them",
                param="echo",
            )
        if self.echo and any(not isinstance(p, str) for p in prompts):
            raise InvalidRequestError(
                "echo: token-id prompts cannot be echoed as text; send the prompt as text",
                param="echo",
            )

    def params(self) -> SamplingParams:
        params = self.sampling()
        if self.logprobs is None:
            return params
        return SamplingParams(
            **{**params.__dict__, "logprobs": True, "top_logprobs": self.logprobs}
        )


EmbeddingInput = (
    NonEmpty
    | Annotated[list[NonEmpty], Field(min_length=1, max_length=2048)]
    | TokenIds
    | Annotated[list[TokenIds], Field(min_length=1, max_length=2048)]
)


def items_of(value: str | list[str] | list[int] | list[list[int]]) -> list[str | list[int]]:
    """A prompt or input field as its items: one text, several, one token-id list, several."""
    if isinstance(value, str):
        return [value]
    items: list[str | list[int]] = []
    for item in value:
        if isinstance(item, int):  # the whole field is one token-id list
            return [[int(token) for token in value if isinstance(token, int)]]
        items.append(item)
    return items


class EmbeddingRequest(WireModel):
    input: EmbeddingInput
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1)] | None = None
    user: str | None = advisory("an end-user id; llmedge keeps no per-user state")


def error_body(message: str, type_: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}

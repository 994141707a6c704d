"""OpenAI wire types for the requests llmedge accepts.

Fields llmedge does not implement are refused by name (extra="forbid"), never silently ignored;
a few that clients send with harmless values (store=false, modalities=["text"]) are accepted at
those values only.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmedge import ChatMessage, InvalidRequestError, SamplingParams, ToolCall

MAX_CHOICES = 8
# OpenAI's rule for function names; it also keeps names safe inside grammars and prompts.
FUNCTION_NAME = r"^[a-zA-Z0-9_.-]{1,64}$"


class WireModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(WireModel):
    type: Literal["text"]
    text: str


Content = str | list[TextPart]
NonEmpty = Annotated[str, Field(min_length=1)]


def content_text(content: Content | None) -> str:
    if isinstance(content, list):
        return "".join(part.text for part in content)
    return content or ""


class FunctionCall(WireModel):
    name: str = Field(pattern=FUNCTION_NAME)
    arguments: str


class WireToolCall(WireModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class WireMessage(WireModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Content | None = None
    name: str | None = None
    tool_calls: list[WireToolCall] | None = None
    tool_call_id: str | None = None
    refusal: None = None

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


class SamplingFields(Tuning):
    model: str | None = Field(None, description="stored model; the server's default when omitted")
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, Field(ge=1, le=MAX_CHOICES)] = 1
    user: str | None = None

    def sampling(self, max_tokens: int | None = None) -> SamplingParams:
        stop = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        limit = max_tokens or self.max_tokens
        given = {*self.tuning(), *(["max_tokens"] if limit else []), *(["stop"] if stop else [])}
        return SamplingParams(
            max_tokens=limit,
            stop=tuple(stop),
            seed=self.seed,
            **self.tuning(),
            given=frozenset(given | ({"seed"} if self.seed is not None else set())),
        )

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(SamplingFields):
    messages: list[WireMessage] = Field(min_length=1)
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    response_format: ResponseFormat | None = None
    tools: list[ChatTool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    store: Literal[False] | None = None
    modalities: list[Literal["text"]] | None = None

    def check(self) -> None:
        """Rules across fields, refused with the field they concern."""
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


class CompletionRequest(SamplingFields):
    prompt: str = Field(min_length=1)
    echo: Literal[False] = False
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None
    suffix: None = None
    best_of: Literal[1] | None = None

    def params(self) -> SamplingParams:
        params = self.sampling()
        if self.logprobs is None:
            return params
        return SamplingParams(
            **{**params.__dict__, "logprobs": True, "top_logprobs": self.logprobs}
        )


class EmbeddingRequest(WireModel):
    input: NonEmpty | Annotated[list[NonEmpty], Field(min_length=1, max_length=2048)]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1)] | None = None
    user: str | None = None


def error_body(message: str, type_: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}

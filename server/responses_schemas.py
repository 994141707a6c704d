"""Wire types of the stateless OpenAI Responses API (`POST /v1/responses`).

llmedge keeps no responses: `store` may only be false and `previous_response_id` is refused, so
a conversation is sent whole in `input` each time (messages, function calls and their outputs).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from llmedge import ChatMessage, InvalidRequestError, ToolCall
from server.schemas import FUNCTION_NAME, JsonSchemaFormat, ServiceHints, Temperature, TopP
from server.wire import WireModel, advisory


class InputText(WireModel):
    type: Literal["input_text", "output_text"]
    text: str
    annotations: list[Any] | None = None
    logprobs: list[Any] | None = None


class InputMessage(WireModel):
    type: Literal["message"] | None = None
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[InputText]
    id: str | None = None
    status: str | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class FunctionCallItem(WireModel):
    type: Literal["function_call"]
    call_id: str
    name: str = Field(pattern=FUNCTION_NAME)
    arguments: str
    id: str | None = None
    status: str | None = None


class FunctionCallOutputItem(WireModel):
    type: Literal["function_call_output"]
    call_id: str
    output: str
    id: str | None = None
    status: str | None = None


InputItem = InputMessage | FunctionCallItem | FunctionCallOutputItem


class FunctionTool(WireModel):
    type: Literal["function"]
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    def echo(self) -> dict[str, Any]:
        """The tool as the response object lists it (`strict` and `parameters` always there)."""
        return {
            **self.model_dump(exclude_none=True),
            "strict": self.strict,
            "parameters": self.parameters,
        }

    def as_chat_tool(self) -> dict[str, Any]:
        function = self.model_dump(exclude_none=True, exclude={"type"})
        return {"type": "function", "function": function}


class NamedFunction(WireModel):
    type: Literal["function"]
    name: str


class TextFormat(WireModel):
    type: Literal["text", "json_object"]


class SchemaFormat(JsonSchemaFormat):
    type: Literal["json_schema"]


class TextOptions(WireModel):
    format: TextFormat | SchemaFormat = Field(default_factory=lambda: TextFormat(type="text"))


class ResponsesRequest(ServiceHints):
    refused: ClassVar[Mapping[str, str]] = {
        "conversation": "llmedge keeps no conversations; send the whole conversation in input",
        "prompt": "llmedge keeps no stored prompts; send instructions and input",
        "context_management": "llmedge does not compact conversations; send a shorter input",
        "moderation": "llmedge runs no moderation; omit it",
        "background_options": "llmedge answers in the foreground only; omit it",
        "image": "llmedge does not generate images",
        "access_programs": "llmedge runs no hosted programs; omit it",
        "max_tool_calls": "not implemented; send parallel_tool_calls: false for at most one call",
    }

    model: str | None = None
    input: str | Annotated[list[InputItem], Field(min_length=1)]
    instructions: str | None = None
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedFunction | None = None
    parallel_tool_calls: bool | None = None
    text: TextOptions | None = None
    stream: bool = False
    store: bool | None = None
    previous_response_id: str | None = None
    truncation: Literal["disabled"] | None = None
    background: Literal[False] | None = None
    stream_options: dict[str, Any] | None = advisory("no obfuscation padding is sent")
    top_logprobs: Literal[0] | None = None
    metadata: dict[str, str] | None = advisory("echoed in the response; nothing is stored")
    user: str | None = advisory("echoed in the response; no per-user state is kept")
    include: list[str] | None = advisory("no hidden reasoning or tool outputs to include")
    reasoning: dict[str, Any] | None = advisory("served models do not reason in hidden tokens")

    def echoed(self) -> dict[str, Any]:
        """The advisory fields the response object repeats, as OpenAI's does."""
        fields = {
            "user": self.user,
            "prompt_cache_key": self.prompt_cache_key,
            "safety_identifier": self.safety_identifier,
            "reasoning": self.reasoning,
        }
        echoed = {name: value for name, value in fields.items() if value is not None}
        if self.service_tier is not None:
            echoed["service_tier"] = "default"
        return echoed

    def check(self) -> None:
        """Rules across fields, refused with the field they concern."""
        for param in ("store", "previous_response_id"):
            if getattr(self, param):
                raise InvalidRequestError(
                    f"{param}: llmedge keeps no responses; omit it and send the whole "
                    "conversation in input",
                    param=param,
                )
        if isinstance(self.tool_choice, NamedFunction):
            if self.tool_choice.name not in {t.name for t in self.tools or ()}:
                raise InvalidRequestError(
                    f"tool_choice names {self.tool_choice.name!r}, which is not among the tools",
                    param="tool_choice",
                )
        elif self.tool_choice == "required" and not self.tools:
            raise InvalidRequestError("tool_choice 'required' needs tools", param="tool_choice")

    def messages(self) -> list[ChatMessage]:
        """`instructions` and `input` as one conversation (linear in the number of items:
        consecutive function calls gather into one assistant message)."""
        messages = [ChatMessage("system", self.instructions)] if self.instructions else []
        if isinstance(self.input, str):
            return [*messages, ChatMessage("user", self.input)]
        calls: list[ToolCall] = []  # calls for the assistant message being gathered

        def flush() -> None:
            if not calls:
                return
            last = messages[-1] if messages else None
            if last is not None and last.role == "assistant" and not last.tool_calls:
                messages[-1] = ChatMessage("assistant", last.content, tuple(calls))
            else:
                messages.append(ChatMessage("assistant", "", tuple(calls)))
            calls.clear()

        for item in self.input:
            if isinstance(item, FunctionCallItem):
                calls.append(ToolCall(item.call_id, item.name, item.arguments))
                continue
            flush()
            if isinstance(item, InputMessage):
                role = "system" if item.role == "developer" else item.role
                messages.append(ChatMessage(role, item.text))
            else:
                messages.append(ChatMessage("tool", item.output, tool_call_id=item.call_id))
        flush()
        return messages

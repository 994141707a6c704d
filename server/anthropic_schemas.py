"""Wire types of the Anthropic Messages API (`POST /v1/messages`, `/v1/messages/count_tokens`),
mapped onto the chat every API shares.

Blocks llmedge can read are text, tool_use and tool_result (and earlier thinking, which is not
shown to the model again); images, documents and server tools are refused by name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from llmedge import ChatMessage, InvalidRequestError, SamplingParams, ToolCall
from llmedge.prompting import schema_grammar
from server.chat_runner import ChatSpec
from server.schemas import FUNCTION_NAME
from server.wire import LenientModel, WireModel, advisory, field_error

_READABLE = ("text", "tool_use", "tool_result", "thinking", "redacted_thinking")


class Block(LenientModel):
    """A content block; the fields each type uses are checked by `type`."""

    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: dict[str, Any] | None = None
    tool_use_id: str | None = None
    content: str | list[Block] | None = None
    is_error: bool | None = None

    @model_validator(mode="after")
    def _readable(self) -> Block:
        if self.type not in _READABLE:
            raise ValueError(
                f"{self.type!r} blocks are not supported: llmedge serves text-only models and "
                "runs no server tools; send text, tool_use and tool_result blocks"
            )
        if self.type == "text" and self.text is None:
            raise field_error("text", "a text block needs its text")
        if self.type == "tool_use" and (not self.id or not self.name):
            raise ValueError("a tool_use block needs its id and name")
        if self.type == "tool_result" and not self.tool_use_id:
            raise field_error("tool_use_id", "a tool_result block names the tool_use it answers")
        return self

    def plain_text(self) -> str:
        if self.type == "text":
            return self.text or ""
        if self.type == "tool_result":
            return blocks_text(self.content)
        return ""


def blocks_text(content: str | list[Block] | None) -> str:
    if isinstance(content, list):
        return "".join(block.plain_text() for block in content if block.type == "text")
    return content or ""


class InputMessage(LenientModel):
    role: Literal["user", "assistant"]
    content: str | list[Block]

    def to_messages(self) -> list[ChatMessage]:
        """One Anthropic message as llmedge's: a user turn's tool results become tool messages
        (before its text, as Anthropic orders them), an assistant's tool_use blocks calls."""
        if isinstance(self.content, str):
            return [ChatMessage(self.role, self.content)]
        text = "".join(b.text or "" for b in self.content if b.type == "text")
        if self.role == "assistant":
            calls = tuple(
                ToolCall(b.id or "", b.name or "", json.dumps(b.input or {}))
                for b in self.content
                if b.type == "tool_use"
            )
            return [ChatMessage("assistant", text, calls)]
        results = [
            ChatMessage("tool", b.plain_text(), tool_call_id=b.tool_use_id)
            for b in self.content
            if b.type == "tool_result"
        ]
        return [*results, ChatMessage("user", text)] if text or not results else results


class Tool(WireModel):
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    type: Literal["custom"] | None = None
    strict: bool | None = None
    cache_control: dict[str, Any] | None = advisory("prefixes are cached automatically")
    eager_input_streaming: bool | None = advisory("tool input streams when the call is whole")

    def as_chat_tool(self) -> dict[str, Any]:
        function: dict[str, Any] = {"name": self.name, "parameters": self.input_schema}
        if self.description:
            function["description"] = self.description
        if self.strict:
            function["strict"] = True
        return {"type": "function", "function": function}


class ToolChoice(WireModel):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None

    @model_validator(mode="after")
    def _name_with_tool(self) -> ToolChoice:
        if (self.type == "tool") != (self.name is not None):
            raise field_error("name", "tool_choice names a tool with type 'tool', and only then")
        return self


class Thinking(WireModel):
    type: str
    budget_tokens: int | None = None
    display: str | None = None

    @model_validator(mode="after")
    def _disabled_only(self) -> Thinking:
        if self.type != "disabled":
            raise field_error(
                "type", "the served models do not think in separate blocks; send 'disabled'"
            )
        return self


class OutputFormat(WireModel):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(WireModel):
    format: OutputFormat | None = None
    effort: str | None = advisory("no hidden reasoning to spend effort on")


class _Conversation(WireModel):
    """What counting and answering share: the conversation and its tools."""

    refused: ClassVar[Mapping[str, str]] = {
        "mcp_servers": "llmedge connects to no MCP servers; give the tools in tools",
        "container": "llmedge runs no code containers; omit it",
    }

    model: str | None = Field(None, description="stored model; the server's default when omitted")
    messages: Annotated[list[InputMessage], Field(min_length=1)]
    system: str | list[Block] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None
    cache_control: dict[str, Any] | None = advisory("prefixes are cached automatically")
    speed: str | None = advisory("there is one speed")
    user_profile_id: str | None = advisory("no per-user state is kept")
    workspace_id: str | None = advisory("there are no workspaces")

    def chat_spec(self, params: SamplingParams) -> ChatSpec:
        system = blocks_text(self.system)
        messages = [ChatMessage("system", system)] if system else []
        for message in self.messages:
            messages.extend(message.to_messages())
        choice = self.tool_choice or ToolChoice(type="auto")
        if choice.type == "tool" and choice.name not in {t.name for t in self.tools or ()}:
            raise InvalidRequestError(
                f"tool_choice names {choice.name!r}, which is not among the tools",
                param="tool_choice.name",
            )
        if choice.type == "any" and not self.tools:
            raise InvalidRequestError("tool_choice 'any' needs tools", param="tool_choice")
        fmt = self.output_config.format if self.output_config else None
        if fmt is not None:
            grammar = schema_grammar(fmt.schema_, param="output_config.format.schema")
            params = replace(params, grammar=grammar)
        modes: dict[str, Literal["none", "auto", "required"]] = {
            "none": "none",
            "any": "required",
        }
        return ChatSpec(
            model=self.model,
            messages=messages,
            params=params,
            tools=[t.as_chat_tool() for t in self.tools or ()],
            tool_mode=modes.get(choice.type, "auto"),
            forced_tool=choice.name if choice.type == "tool" else None,
            parallel_tool_calls=not choice.disable_parallel_tool_use,
        )


class CountTokensRequest(_Conversation):
    pass


class MessagesRequest(_Conversation):
    max_tokens: Annotated[int, Field(ge=1)]
    stop_sequences: list[str] | None = None
    stream: bool = False
    temperature: Annotated[float, Field(ge=0, le=1)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    metadata: dict[str, Any] | None = advisory("an end-user id; no per-user state is kept")
    service_tier: str | None = advisory("there is one tier; answered as 'standard'")
    inference_geo: str | None = advisory("answered where the server runs")
    diagnostics: dict[str, Any] | None = advisory("no cache diagnostics are reported")

    def sampling(self) -> SamplingParams:
        params = SamplingParams(max_tokens=self.max_tokens, stop=tuple(self.stop_sequences or ()))
        if self.temperature is not None:
            params = replace(params, temperature=self.temperature)
        if self.top_p is not None:
            params = replace(params, top_p=self.top_p)
        if self.top_k is not None:
            params = replace(params, top_k=self.top_k)
        return params

"""Tool calling across model families: which format a chat template speaks, how to ask for calls,
how to force them with a grammar, and how to read them back out of generated text.

Formats (what the model writes):
    hermes   <tool_call>{"name": ..., "arguments": {...}}</tool_call>     Qwen 2.5, Hermes, SmolLM3
    llama3   {"name": ..., "parameters": {...}} as the whole message       Llama 3.1 / 3.2
    phi      <|tool_call|>[{"name": ..., "arguments": {...}}]<|/tool_call|>  Phi-4-mini
    gemma    ```tool_code\nname(arg="value")\n```                          Gemma (documented style)

A template that does not render `tools` itself (SmolLM2, Phi-3, Gemma 2/3) gets llmedge's own
instructions in a system message and answers in the hermes format; its tool calls and results are
folded into plain messages the template can render (`fold_messages`).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Literal

from llmedge.errors import InvalidRequestError
from llmedge.generation import ChatMessage, ToolCall
from llmedge.prompting.chat_template import ChatTemplate
from llmedge.prompting.json_schema import GrammarBuilder, gbnf_literal
from llmedge.prompting.tool_parser import ToolCallParser, parse_tool_calls

__all__ = [
    "ToolCallParser",
    "ToolFormat",
    "detect_tool_format",
    "fold_messages",
    "forced_call_grammar",
    "new_call_id",
    "parse_tool_calls",
    "tool_system_prompt",
]

ToolStyle = Literal["hermes", "llama3", "phi", "gemma"]
_PROBE = "llmedge_probe_tool"


@dataclass(frozen=True)
class ToolFormat:
    """How one chat template does tools: the format its model writes, and whether the template
    renders the tool list itself (native) or llmedge must describe the tools in a system message."""

    style: ToolStyle
    native: bool


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


@lru_cache(maxsize=32)
def detect_tool_format(template: str | None) -> ToolFormat:
    """The tool format of a chat template, found by rendering it with a probe tool."""
    source = template or ""
    probe = {
        "type": "function",
        "function": {"name": _PROBE, "description": "probe", "parameters": {"type": "object"}},
    }
    try:
        rendered = ChatTemplate(source).render([ChatMessage("user", "hi")], tools=[probe])
    except InvalidRequestError:
        rendered = ""
    if _PROBE not in rendered:
        return ToolFormat("hermes", native=False)
    if "<tool_call>" in source:
        return ToolFormat("hermes", native=True)
    if "<|tool_call|>" in source:
        return ToolFormat("phi", native=True)
    if "tool_code" in source:
        return ToolFormat("gemma", native=True)
    if "<|python_tag|>" in source or "ipython" in source or '"parameters"' in source:
        return ToolFormat("llama3", native=True)
    return ToolFormat("hermes", native=True)


def _function(tool: Mapping[str, Any]) -> Mapping[str, Any]:
    function = tool.get("function")
    return function if isinstance(function, Mapping) else tool


def tool_system_prompt(tools: Sequence[Mapping[str, Any]]) -> str:
    """Instructions for a model whose template cannot describe tools itself."""
    described = "\n".join(json.dumps(_function(t), ensure_ascii=False) for t in tools)
    return (
        "You can call functions to help answer. These are the functions, as JSON schemas:\n"
        f"<tools>\n{described}\n</tools>\n"
        "To call a function, reply with only this, once per call:\n"
        '<tool_call>\n{"name": "<function name>", "arguments": {<arguments as JSON>}}\n'
        "</tool_call>\n"
        "Function results come back inside <tool_response></tool_response>. "
        "When no function is needed, answer normally."
    )


def _call_text(call: ToolCall) -> str:
    try:
        arguments: Any = json.loads(call.arguments)
    except ValueError:
        arguments = call.arguments
    body = json.dumps({"name": call.name, "arguments": arguments}, ensure_ascii=False)
    return f"<tool_call>\n{body}\n</tool_call>"


def fold_messages(
    messages: Sequence[ChatMessage], tools: Sequence[Mapping[str, Any]]
) -> list[ChatMessage]:
    """The conversation as plain system/user/assistant text, for a template without tool support:
    the tool instructions join the system message, calls become assistant text and results a
    user turn (consecutive results share one turn, so user and assistant still alternate).
    Linear in the conversation's size, however many results come in a row."""
    folded: list[ChatMessage] = []
    results: list[str] = []  # consecutive tool results, joined into one user turn at the end

    def flush() -> None:
        if results:
            folded.append(ChatMessage("user", "\n".join(results)))
            results.clear()

    for message in messages:
        if message.role == "tool":
            results.append(f"<tool_response>\n{message.content}\n</tool_response>")
            continue
        flush()
        if message.role == "assistant" and message.tool_calls:
            text = "\n".join(
                [message.content, *(_call_text(c) for c in message.tool_calls)]
            ).strip()
            folded.append(ChatMessage("assistant", text))
        else:
            folded.append(ChatMessage(message.role, message.content))
    flush()
    if tools:
        instructions = tool_system_prompt(tools)
        if folded and folded[0].role == "system":
            folded[0] = replace(folded[0], content=f"{folded[0].content}\n\n{instructions}")
        else:
            folded.insert(0, ChatMessage("system", instructions))
    return folded


def _rule_name(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name)


def forced_call_grammar(
    fmt: ToolFormat,
    tools: Sequence[Mapping[str, Any]],
    parallel: bool = False,
    max_calls: int | None = None,
) -> str:
    """A grammar that lets the model write only tool calls, in its own format, to these tools,
    with arguments valid under each tool's parameter schema: one call, or with `parallel` up to
    `max_calls` (None: any number)."""
    if not tools:
        raise InvalidRequestError("a tool call was required but no tools were given", param="tools")
    builder = GrammarBuilder()
    key = "parameters" if fmt.style == "llama3" else "arguments"
    calls = []
    for i, tool in enumerate(tools):
        function = _function(tool)
        name = str(function.get("name", ""))
        schema = function.get("parameters") or {"type": "object"}
        args = builder.add_schema(
            f"{_rule_name(name)}-args",
            schema,
            param=f"tools.{i}.function.parameters",
            lenient=not function.get("strict", False),
        )
        head = gbnf_literal(f'{{"name": {json.dumps(name)}, "{key}": ')
        calls.append(builder.add_rule(f"call-{_rule_name(name)}", f'{head} {args} "}}"'))
    call = builder.add_rule("call", " | ".join(calls))
    if fmt.style == "llama3":
        return builder.build(call)
    more = "*" if max_calls is None else f"{{0,{max_calls - 1}}}"
    if fmt.style == "phi":
        tail = f' ("," " "? call){more}' if parallel and max_calls != 1 else ""
        return builder.build(f'"<|tool_call|>[" call{tail} "]<|/tool_call|>"')
    # hermes, and gemma, whose documented python-call style is not forced: the JSON form is.
    block = builder.add_rule("block", '"<tool_call>\\n" call "\\n</tool_call>"')
    if not parallel or max_calls == 1:
        return builder.build(block)
    return builder.build(f'{block} ("\\n" {block}){more}')

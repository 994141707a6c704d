"""Which tool format a chat template speaks, how calls are forced, how history is folded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llmedge import ChatMessage, InvalidRequestError, ToolCall
from llmedge.gguf import read_gguf_header
from llmedge.prompting import ChatTemplate
from llmedge.prompting.tool_formats import (
    ToolFormat,
    detect_tool_format,
    fold_messages,
    forced_call_grammar,
    tool_system_prompt,
)

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        },
    },
    {"type": "function", "function": {"name": "now"}},
]
_TURNS = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"
TEMPLATES = {
    "qwen": "{% if tools %}# Tools\n<tools>{% for t in tools %}{{ t | tojson }}{% endfor %}"
    "</tools>\nReturn <tool_call>{...}</tool_call>{% endif %}" + _TURNS,
    "llama3": '{% if tools is not none %}Respond as {"name": function name, "parameters": '
    "dictionary}.{% for t in tools %}{{ t | tojson }}{% endfor %}{% endif %}"
    "{% for m in messages %}{% if m.role == 'ipython' %}x{% endif %}{{ m.content }}{% endfor %}",
    "phi": "{% if tools %}<|tool|>{{ tools | tojson }}<|/tool|>{% endif %}"
    + _TURNS
    + "{# calls come as <|tool_call|>[...]<|/tool_call|> #}",
    "gemma": "{% if tools %}{{ tools | tojson }} Call them in ```tool_code``` blocks.{% endif %}"
    + _TURNS,
    "tools-unmarked": "{% if tools %}{{ tools | tojson }}{% endif %}" + _TURNS,
    "no-tools": _TURNS,
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("qwen", ToolFormat("hermes", native=True)),
        ("llama3", ToolFormat("llama3", native=True)),
        ("phi", ToolFormat("phi", native=True)),
        ("gemma", ToolFormat("gemma", native=True)),
        ("tools-unmarked", ToolFormat("hermes", native=True)),
        ("no-tools", ToolFormat("hermes", native=False)),
    ],
)
def test_the_format_follows_what_the_template_renders(template: str, expected: ToolFormat) -> None:
    assert detect_tool_format(TEMPLATES[template]) == expected


def test_a_template_that_mentions_tools_but_never_renders_them_is_not_native() -> None:
    # Phi-4-mini's real template reads tools from the system message, not from `tools`.
    source = "{% for m in messages %}{% if 'tools' in m %}{{ m.tools }}{% endif %}{% endfor %}"
    assert detect_tool_format(source) == ToolFormat("hermes", native=False)


def test_smollm2_has_no_tool_support_so_llmedge_describes_tools(smollm2_gguf: Path) -> None:
    template = read_gguf_header(smollm2_gguf).get("tokenizer.chat_template")
    assert isinstance(template, str)
    assert detect_tool_format(template) == ToolFormat("hermes", native=False)


def test_folding_turns_tool_history_into_plain_turns() -> None:
    call = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
    messages = [
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "Weather in Paris and the time?"),
        ChatMessage("assistant", "", (call, ToolCall("call_2", "now", "{}"))),
        ChatMessage("tool", '{"temp_c": 21}', tool_call_id="call_1"),
        ChatMessage("tool", "12:00", tool_call_id="call_2"),
    ]
    folded = fold_messages(messages, TOOLS)
    assert [m.role for m in folded] == ["system", "user", "assistant", "user"]
    assert folded[0].content.startswith("Be brief.\n\n") and "get_weather" in folded[0].content
    assert folded[2].content.count("<tool_call>") == 2
    body = folded[2].content.split("<tool_call>\n")[1].split("\n</tool_call>")[0]
    assert json.loads(body) == {"name": "get_weather", "arguments": {"city": "Paris"}}
    assert folded[3].content.count("<tool_response>") == 2 and "12:00" in folded[3].content
    assert all(not m.tool_calls and m.tool_call_id is None for m in folded)
    # The folded turns render through a template that knows nothing of tools.
    assert "<tool_response>" in ChatTemplate(None).render(folded)


def test_without_tools_folding_adds_no_instructions() -> None:
    folded = fold_messages([ChatMessage("user", "hi")], [])
    assert folded == [ChatMessage("user", "hi")]


def test_the_system_prompt_lists_every_function_schema() -> None:
    prompt = tool_system_prompt(TOOLS)
    listed = prompt.split("<tools>\n")[1].split("\n</tools>")[0].splitlines()
    assert [json.loads(line)["name"] for line in listed] == ["get_weather", "now"]


@pytest.fixture
def vocab(llama_vocab: Any) -> Any:
    return llama_vocab


def _parses(vocab: Any, grammar: str) -> bool:
    import llama_cpp

    sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
    if not sampler:
        return False
    llama_cpp.llama_sampler_free(sampler)
    return True


@pytest.mark.parametrize("style", ["hermes", "llama3", "phi", "gemma"])
@pytest.mark.parametrize("parallel", [False, True])
def test_forced_call_grammars_parse_in_llama_cpp(vocab: Any, style: str, parallel: bool) -> None:
    grammar = forced_call_grammar(ToolFormat(style, native=True), TOOLS, parallel)  # type: ignore[arg-type]
    assert _parses(vocab, grammar)
    assert '"get_weather' in grammar and '"now' in grammar


def test_a_forced_call_needs_tools() -> None:
    with pytest.raises(InvalidRequestError, match="no tools"):
        forced_call_grammar(ToolFormat("hermes", native=False), [])


def test_an_unenforceable_bound_in_a_tool_schema_is_dropped_not_refused() -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "f",
            "parameters": {
                "type": "object",
                "properties": {"n": {"type": "integer", "minimum": 1}},
            },
        },
    }
    grammar = forced_call_grammar(ToolFormat("hermes", native=False), [tool])
    assert "f-args" in grammar
    strict = {"type": "function", "function": {**tool["function"], "strict": True}}
    with pytest.raises(InvalidRequestError, match="minimum"):
        forced_call_grammar(ToolFormat("hermes", native=False), [strict])

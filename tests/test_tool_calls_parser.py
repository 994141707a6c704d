"""Reading tool calls out of generated text, in every family's format, whole and streamed."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmedge.prompting.tool_parser import ParseStep, ToolCallParser, parse_tool_calls

NAMES = ("get_weather", "add")


def _ids() -> itertools.count[int]:
    return itertools.count()


def _parse(text: str, whole: bool = False) -> ParseStep:
    counter = _ids()
    return parse_tool_calls(text, NAMES, lambda: f"call_{next(counter)}", whole)


def _streamed(pieces: list[str], whole: bool = False) -> ParseStep:
    counter = _ids()
    parser = ToolCallParser(NAMES, lambda: f"call_{next(counter)}", whole)
    step = ParseStep()
    for piece in pieces:
        step.extend(parser.feed(piece))
    step.extend(parser.finish())
    return step


def _calls(step: ParseStep) -> list[tuple[str, dict[str, object]]]:
    return [(c.name, json.loads(c.arguments)) for c in step.calls]


HERMES = (
    'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
    '</tool_call>\n<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>'
)
PHI = '<|tool_call|>[{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "add", "arguments": {"a": 1, "b": 2}}]<|/tool_call|>'  # noqa: E501
GEMMA = 'Sure.\n```tool_code\nget_weather(city="Paris")\nadd(a=1, b=2)\n```'
LLAMA3 = '{"name": "get_weather", "parameters": {"city": "Paris"}}; {"name": "add", "parameters": {"a": 1, "b": 2}}'  # noqa: E501
BOTH = [("get_weather", {"city": "Paris"}), ("add", {"a": 1, "b": 2})]


@pytest.mark.parametrize(
    ("text", "whole", "content"),
    [
        (HERMES, False, "Let me check.\n\n"),
        (PHI, False, ""),
        (GEMMA, False, "Sure.\n"),
        (LLAMA3, True, ""),
        ("<|python_tag|>" + LLAMA3, True, ""),
    ],
    ids=["hermes", "phi", "gemma", "llama3", "llama3-python-tag"],
)
def test_each_family_format_gives_the_same_calls(text: str, whole: bool, content: str) -> None:
    step = _parse(text, whole)
    assert _calls(step) == BOTH
    assert step.content == content
    assert [c.id for c in step.calls] == ["call_0", "call_1"]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([(HERMES, False), (PHI, False), (GEMMA, False), (LLAMA3, True)]), st.data())
def test_any_split_into_pieces_parses_like_the_whole(
    case: tuple[str, bool], data: st.DataObject
) -> None:
    text, whole = case
    cuts = sorted(data.draw(st.sets(st.integers(1, len(text) - 1), max_size=12)))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    streamed, at_once = _streamed(pieces, whole), _parse(text, whole)
    assert _calls(streamed) == _calls(at_once) and streamed.content == at_once.content


def test_plain_text_streams_at_once_but_holds_a_possible_marker() -> None:
    parser = ToolCallParser(NAMES, lambda: "x")
    assert parser.feed("Hello wor").content == "Hello wor"
    assert parser.feed("ld <tool").content == "ld "  # "<tool" may open a call
    assert parser.feed("s are fun").content == "<tools are fun"
    assert parser.finish().content == ""


def test_a_call_is_reported_as_soon_as_its_block_closes() -> None:
    parser = ToolCallParser(NAMES, lambda: "id")
    assert parser.feed('<tool_call>{"name": "add", "arguments": {"a": 1').calls == []
    step = parser.feed("}}</tool_call> after")
    assert [c.name for c in step.calls] == ["add"] and step.content == " after"
    assert parser.finish().content == ""


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>',  # not one of the tools
        "<tool_call>{not json}</tool_call>",
        '<tool_call>{"name": "add", "arguments": "[1]"}</tool_call>',  # arguments not an object
        "```tool_code\nimport os\n```",
        "```tool_code\nadd(1, 2)\n```",  # positional arguments name nothing
    ],
)
def test_a_block_that_is_not_a_valid_call_stays_text(text: str) -> None:
    step = _parse(text)
    assert step.calls == [] and step.content == text


def test_an_unclosed_block_at_the_end_is_read_as_closed() -> None:
    step = _parse('<tool_call>\n{"name": "add", "arguments": {"a": 1}}\n')
    assert _calls(step) == [("add", {"a": 1})]


def test_arguments_given_as_json_text_are_accepted() -> None:
    step = _parse('<tool_call>{"name": "add", "arguments": "{\\"a\\": 1}"}</tool_call>')
    assert _calls(step) == [("add", {"a": 1})]


def test_llama3_json_is_a_call_only_as_the_whole_message() -> None:
    assert _parse('Here: {"name": "add", "parameters": {}}', whole=True).calls == []
    prose = _parse('{"answer": 42}', whole=True)
    assert prose.calls == [] and prose.content == '{"answer": 42}'
    assert _parse(LLAMA3, whole=False).calls == []  # other formats never read bare JSON


# --- a generation cut by the token limit; repeats when calls are forced -------------------


def _finished(text: str, cut: bool, whole: bool = False, **options: bool) -> ParseStep:
    counter = _ids()
    parser = ToolCallParser(NAMES, lambda: f"call_{next(counter)}", whole, **options)
    step = parser.feed(text)
    step.extend(parser.finish(cut=cut))
    return step


CALL = '<tool_call>\n{"name": "add", "arguments": {"a": 1}}\n</tool_call>'


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>\n{"name": "add", "argu',
        CALL + '\n<tool_call>\n{"name": "get_weather", "arguments": {"ci',
        CALL + "\n<tool_",
    ],
)
def test_half_a_call_cut_by_the_limit_is_neither_a_call_nor_text(text: str) -> None:
    cut = _finished(text, cut=True)
    assert cut.content.strip() == "" and _calls(cut) == _calls(_parse(text.split("\n<")[0]))
    assert "<tool" in _finished(text, cut=False).content  # a model that just stopped keeps it


def test_a_whole_message_call_cut_by_the_limit_is_dropped() -> None:
    text = '{"name": "add", "parameters": {"a": '
    assert _finished(text, cut=True, whole=True) == ParseStep()
    assert _finished(text, cut=False, whole=True).content == text


def test_a_call_whose_end_marker_was_cut_still_counts() -> None:
    text = '<tool_call>\n{"name": "add", "arguments": {"a": 1}}\n'
    assert _calls(_finished(text, cut=True)) == [("add", {"a": 1})]


def test_forced_calls_drop_identical_repeats_and_by_default_a_second_call_per_tool() -> None:
    other = '<tool_call>\n{"name": "add", "arguments": {"a": 2}}\n</tool_call>'
    weather = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    text = "\n".join([CALL, CALL, other, weather, CALL])
    assert len(_parse(text).calls) == 5  # not forced: every call the model wrote
    unique = _calls(_finished(text, cut=False, unique=True))
    assert unique == [("add", {"a": 1}), ("add", {"a": 2}), ("get_weather", {"city": "Oslo"})]
    once = _calls(_finished(text, cut=False, one_per_tool=True))
    assert once == [("add", {"a": 1}), ("get_weather", {"city": "Oslo"})]
    spaced = CALL + "\n" + CALL.replace('{"a": 1}', '{ "a" :1 }')
    assert len(_finished(spaced, cut=False, unique=True).calls) == 1  # same arguments as JSON

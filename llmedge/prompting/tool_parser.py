"""Reads tool calls out of generated text, whole or as it streams.

Text outside a call streams on at once, except a tail that might be the start of a call marker;
a call is reported once its block is complete. A block that does not hold a valid call to a known
tool is given back as plain text, so nothing the model wrote is lost — except when the token
limit cut it off (`finish(cut=True)`): half a call is neither a call nor an answer, so it is
dropped. When calls were forced, repeats are dropped too (`unique`, `one_per_tool`).
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

from llmedge.generation import ToolCall

# (start marker, end marker, body kind) of the block formats.
_BLOCKS = (
    ("<tool_call>", "</tool_call>", "json"),
    ("<|tool_call|>", "<|/tool_call|>", "json"),
    ("```tool_code", "```", "python"),
)
_PYTHON_TAG = "<|python_tag|>"


@dataclass
class ParseStep:
    """What a piece of generated text turned out to be: answer text and completed calls."""

    content: str = ""
    calls: list[ToolCall] = field(default_factory=list)

    def extend(self, other: ParseStep) -> None:
        self.content += other.content
        self.calls.extend(other.calls)


def _arguments(value: Any) -> str | None:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if not isinstance(value, dict):
        return None
    return json.dumps(value, ensure_ascii=False)


def _json_values(text: str) -> Iterator[Any]:
    """The JSON values in `text`, one after another (separated by space, `;` or `,`)."""
    decoder = json.JSONDecoder()
    at = 0
    while True:
        while at < len(text) and text[at] in " \t\r\n;,":
            at += 1
        if at >= len(text):
            return
        value, at = decoder.raw_decode(text, at)
        yield value


def _json_calls(text: str) -> list[tuple[str, str]] | None:
    try:
        values = list(_json_values(text))
    except ValueError:
        return None
    items = [v for value in values for v in (value if isinstance(value, list) else [value])]
    calls = []
    for item in items:
        if not isinstance(item, dict):
            return None
        if isinstance(item.get("function"), dict):  # {"type": "function", "function": {...}}
            item = item["function"]
        name = item.get("name")
        args = _arguments(item.get("arguments", item.get("parameters", {})))
        if not isinstance(name, str) or args is None:
            return None
        calls.append((name, args))
    return calls or None


def _python_calls(text: str) -> list[tuple[str, str]] | None:
    """Calls written as Python, `name(key="value", n=2)`, with literal keyword arguments only."""
    try:
        tree = ast.parse(text.strip())
    except SyntaxError:
        return None
    calls = []
    for statement in tree.body:
        call = statement.value if isinstance(statement, ast.Expr) else None
        if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name) or call.args:
            return None
        try:
            args = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg}
        except ValueError:
            return None
        calls.append((call.func.id, json.dumps(args, ensure_ascii=False)))
    return calls or None


class ToolCallParser:
    """Feed generated text with `feed`, then call `finish`; each returns a `ParseStep`.

    `whole_message_json`: the format writes a call as the entire message (Llama 3), so a message
    that opens with `{` is held to the end and read as calls if it parses as them.
    """

    def __init__(
        self,
        tool_names: Collection[str],
        new_id: Callable[[], str],
        whole_message_json: bool = False,
        unique: bool = False,
        one_per_tool: bool = False,
    ) -> None:
        self._names = set(tool_names)
        self._new_id = new_id
        self._whole = whole_message_json
        self._unique = unique or one_per_tool
        self._one_per_tool = one_per_tool
        self._seen: set[tuple[str, str]] = set()
        self._called: set[str] = set()
        self._buffer = ""
        self._block: tuple[str, str, str] | None = None
        self._seen_text = False
        self._holding_message = False

    def feed(self, text: str) -> ParseStep:
        self._buffer += text
        step = ParseStep()
        while True:
            if self._holding_message:
                return step
            if self._block is not None:
                start, end, kind = self._block
                at = self._buffer.find(end)
                if at < 0:
                    return step
                step.extend(self._close(start, self._buffer[:at], end, kind))
                self._buffer = self._buffer[at + len(end) :]
                continue
            if self._whole and not self._seen_text:
                head = self._buffer.lstrip()
                if head.startswith(("{", "[", _PYTHON_TAG)):
                    self._holding_message = True
                    return step
                if not head or _PYTHON_TAG.startswith(head):
                    return step
            found = [(self._buffer.find(b[0]), b) for b in _BLOCKS]
            hits = [(at, b) for at, b in found if at >= 0]
            if hits:
                at, block = min(hits, key=lambda hit: hit[0])
                step.extend(self._text(self._buffer[:at]))
                self._buffer = self._buffer[at + len(block[0]) :]
                self._block = block
                continue
            keep = self._partial_marker()
            step.extend(self._text(self._buffer[: len(self._buffer) - keep]))
            self._buffer = self._buffer[len(self._buffer) - keep :]
            return step

    def finish(self, cut: bool = False) -> ParseStep:
        """The rest, at the end of generation: an unclosed block is read as if closed.

        `cut`: the token limit ended the generation, so what is unfinished (a block that does not
        parse, a tail that may begin a marker) was cut off mid-call and is dropped."""
        step = ParseStep()
        buffer, self._buffer = self._buffer, ""
        if self._holding_message:
            self._holding_message = False
            body = buffer.strip().removeprefix(_PYTHON_TAG)
            calls = self._known(_json_calls(body))
            if calls is not None:
                step.calls.extend(calls)
            elif not cut:
                step.extend(self._text(buffer))
        elif self._block is not None:
            start, _, kind = self._block
            self._block = None
            closed = self._close(start, buffer, "", kind)
            if closed.calls or not cut:
                step.extend(closed)
        elif not cut or not self._partial_marker_of(buffer):
            step.extend(self._text(buffer))
        return step

    def _text(self, text: str) -> ParseStep:
        if text.strip():
            self._seen_text = True
        return ParseStep(content=text)

    def _known(self, calls: list[tuple[str, str]] | None) -> list[ToolCall] | None:
        if calls is None or (self._names and any(name not in self._names for name, _ in calls)):
            return None
        kept = []
        for name, args in calls:
            key = (name, json.dumps(json.loads(args), sort_keys=True))
            if (self._unique and key in self._seen) or (
                self._one_per_tool and name in self._called
            ):
                continue  # a repeat: the call is already made
            self._seen.add(key)
            self._called.add(name)
            kept.append(ToolCall(self._new_id(), name, args))
        return kept

    def _close(self, start: str, body: str, end: str, kind: str) -> ParseStep:
        self._block = None
        parse = _json_calls if kind == "json" else _python_calls
        calls = self._known(parse(body))
        if calls is None:
            return self._text(start + body + end)
        self._seen_text = True
        return ParseStep(calls=calls)

    def _partial_marker(self) -> int:
        return self._partial_marker_of(self._buffer)

    @staticmethod
    def _partial_marker_of(text: str) -> int:
        """Length of the longest end of `text` that could begin a block marker."""
        longest = 0
        for start, _, _ in _BLOCKS:
            for n in range(min(len(start) - 1, len(text)), longest, -1):
                if text.endswith(start[:n]):
                    longest = n
                    break
        return longest


def parse_tool_calls(
    text: str,
    tool_names: Collection[str],
    new_id: Callable[[], str],
    whole_message_json: bool = False,
) -> ParseStep:
    """The answer text and tool calls in a complete generation."""
    parser = ToolCallParser(tool_names, new_id, whole_message_json)
    step = parser.feed(text)
    step.extend(parser.finish())
    return step

"""From a conversation to tokens and back: chat templates, stop strings, tool-call formats and
their parser, and JSON-schema grammars that constrain sampling."""

from __future__ import annotations

from llmedge.prompting.chat_template import ChatTemplate
from llmedge.prompting.json_schema import json_object_grammar, schema_grammar
from llmedge.prompting.stop_matcher import StopMatcher
from llmedge.prompting.tool_formats import (
    ToolFormat,
    detect_tool_format,
    fold_messages,
    forced_call_grammar,
    new_call_id,
)
from llmedge.prompting.tool_parser import ToolCallParser, parse_tool_calls

__all__ = [
    "ChatTemplate",
    "StopMatcher",
    "ToolCallParser",
    "ToolFormat",
    "detect_tool_format",
    "fold_messages",
    "forced_call_grammar",
    "json_object_grammar",
    "new_call_id",
    "parse_tool_calls",
    "schema_grammar",
]

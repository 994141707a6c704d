"""From a conversation to tokens and back: chat templates, a created model's defaults, stop
strings, tool-call formats and their parser, and JSON-schema grammars that constrain sampling."""

from __future__ import annotations

from llmedge.prompting.chat_template import ChatTemplate
from llmedge.prompting.defaults import (
    ModelfileSpec,
    apply_defaults,
    model_defaults,
    parameters_from,
    parse_modelfile,
)
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
    "ModelfileSpec",
    "StopMatcher",
    "ToolCallParser",
    "ToolFormat",
    "apply_defaults",
    "detect_tool_format",
    "fold_messages",
    "forced_call_grammar",
    "json_object_grammar",
    "model_defaults",
    "new_call_id",
    "parameters_from",
    "parse_modelfile",
    "parse_tool_calls",
    "schema_grammar",
]

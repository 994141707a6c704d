"""JSON schema → GBNF grammar, so that llama.cpp can only sample JSON that the schema accepts.

The conversion itself is llama-cpp-python's `SchemaConverter`. This module adds what makes its
promise hold: a schema keyword the grammar cannot enforce (`minimum`, `uniqueItems`, …) is refused
by name instead of being silently ignored, string characters exclude the raw control characters
that JSON forbids, and literals are escaped fully. `GrammarBuilder` embeds several schemas in one
larger grammar (the tool-call formats in `llmedge.prompting.tool_formats` use it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from llmedge.errors import BackendUnavailableError, InvalidRequestError

# Keywords that only annotate a schema: they constrain nothing, so ignoring them is honest.
_ANNOTATIONS = frozenset(
    {
        "$schema", "$id", "$comment", "$anchor", "title", "description", "default",
        "examples", "deprecated", "readOnly", "writeOnly", "strict", "discriminator",
    }
)  # fmt: skip
# Keywords the grammar enforces.
_ENFORCED = frozenset(
    {
        "type", "properties", "required", "additionalProperties", "items", "prefixItems",
        "minItems", "maxItems", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "$defs",
        "definitions", "pattern", "minLength", "maxLength", "format",
    }
)  # fmt: skip
_FORMATS = frozenset(
    {"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"}
)
_TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})
# A JSON string character: anything but a quote, a backslash or a control character, or an escape.
_JSON_CHAR = (
    r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" '
    r"[0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])"
)
_LITERAL_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_LITERAL_SPECIAL = re.compile(r'[\\"\n\r\t]')


def gbnf_literal(text: str) -> str:
    """`text` as a GBNF string literal."""
    return '"' + _LITERAL_SPECIAL.sub(lambda m: _LITERAL_ESCAPES[m.group(0)], text) + '"'


def _unsupported(keyword: str, where: str, param: str) -> InvalidRequestError:
    place = f" at {where}" if where else ""
    return InvalidRequestError(
        f"JSON schema keyword {keyword!r}{place} cannot be enforced while sampling; "
        "remove it from the schema and check it in your own code",
        param=param,
        code="unsupported_schema",
    )


def check_schema(schema: object, param: str, where: str = "") -> None:
    """Refuse a schema whose every constraint the grammar could not enforce."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, Mapping):
        raise InvalidRequestError(
            f"a JSON schema must be an object{' at ' + where if where else ''}", param=param
        )
    for keyword, value in schema.items():
        here = f"{where}.{keyword}" if where else keyword
        if keyword in _ANNOTATIONS:
            continue
        if keyword not in _ENFORCED:
            raise _unsupported(keyword, where, param)
        if keyword == "format" and value not in _FORMATS:
            raise _unsupported(f"format: {value}", where, param)
        if keyword == "type":
            types = value if isinstance(value, list) else [value]
            if not types or any(t not in _TYPES for t in types):
                raise InvalidRequestError(
                    f"unknown JSON schema type {value!r} at {here}", param=param
                )
        if keyword == "$ref" and not (isinstance(value, str) and value.startswith("#/")):
            raise InvalidRequestError(
                f"only local references ('#/...') are allowed, not {value!r}", param=param
            )
        if keyword in ("properties", "$defs", "definitions"):
            if not isinstance(value, Mapping):
                raise InvalidRequestError(f"{here} must be an object", param=param)
            for name, sub in value.items():
                check_schema(sub, param, f"{here}.{name}")
        elif keyword in ("anyOf", "oneOf", "allOf", "prefixItems"):
            if not isinstance(value, list) or not value:
                raise InvalidRequestError(f"{here} must be a non-empty list", param=param)
            for i, sub in enumerate(value):
                check_schema(sub, param, f"{here}.{i}")
        elif keyword in ("items", "additionalProperties") and not isinstance(value, bool):
            check_schema(value, param, here)


def relax_schema(schema: Any) -> Any:
    """`schema` without the keywords a grammar cannot enforce (for advisory schemas, such as a
    non-strict tool's parameters, where dropping a bound beats refusing the request)."""
    if isinstance(schema, list):
        return [relax_schema(item) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    kept: dict[str, Any] = {}
    for keyword, value in schema.items():
        if keyword in ("properties", "$defs", "definitions") and isinstance(value, Mapping):
            kept[keyword] = {name: relax_schema(sub) for name, sub in value.items()}
        elif keyword == "format" and value not in _FORMATS:
            continue
        elif keyword in _ENFORCED or keyword in _ANNOTATIONS:
            kept[keyword] = relax_schema(value) if keyword not in ("enum", "const") else value
    return kept


def _converter_class() -> Any:
    try:
        from llama_cpp.llama_grammar import SchemaConverter
    except ImportError as exc:
        raise BackendUnavailableError(
            "structured output needs llama-cpp-python; "
            "install it with `pip install 'llmedge[llama]'`"
        ) from exc

    class _Converter(SchemaConverter):
        def _format_literal(self, literal: str) -> str:
            return gbnf_literal(literal)

    return _Converter


class GrammarBuilder:
    """Collects the rules of one grammar: schemas converted to rules plus rules written by hand."""

    def __init__(self) -> None:
        self._converter = _converter_class()(
            prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False
        )

    def add_schema(
        self, name: str, schema: Mapping[str, Any], param: str, lenient: bool = False
    ) -> str:
        """Add the rules for documents valid under `schema`; returns the name of its rule.

        A keyword the grammar cannot enforce is refused, or dropped when `lenient`."""
        if lenient:
            schema = relax_schema(schema)
        check_schema(schema, param)
        copy = json.loads(json.dumps(schema))  # resolve_refs rewrites $ref in place
        try:
            copy = self._converter.resolve_refs(copy, name)
            return str(self._converter.visit(copy, name))
        except (AssertionError, ValueError, KeyError, RecursionError, TypeError) as exc:
            raise InvalidRequestError(
                f"the JSON schema cannot be turned into a grammar: {exc}", param=param
            ) from exc

    def add_rule(self, name: str, body: str) -> str:
        return str(self._converter._add_rule(name, body))

    def build(self, root: str) -> str:
        """The grammar text, starting at the rule `root`."""
        rules: dict[str, str] = dict(self._converter._rules)
        if "char" in rules:
            rules["char"] = _JSON_CHAR
        rules["root"] = root
        return "\n".join(f"{name} ::= {body}" for name, body in sorted(rules.items()))


def schema_grammar(schema: Mapping[str, Any], param: str = "response_format") -> str:
    """A grammar whose sentences are exactly the JSON documents `schema` accepts."""
    builder = GrammarBuilder()
    return builder.build(builder.add_schema("doc", schema, param))


def json_object_grammar() -> str:
    """A grammar for any JSON object (OpenAI's `json_object` mode, Ollama's `format: "json"`)."""
    return schema_grammar({"type": "object"})

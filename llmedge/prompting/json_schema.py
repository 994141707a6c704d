"""JSON schema → GBNF grammar, so that llama.cpp can only sample JSON that the schema accepts.

The conversion itself is llama-cpp-python's `SchemaConverter`, with the rewrites in
`llmedge.prompting.schema_rules`. This module adds what makes its promise hold: a schema keyword
the grammar cannot enforce (`minimum`, `uniqueItems`, …) is refused by name instead of being
silently ignored, string characters exclude the raw control characters that JSON forbids,
literals are escaped fully, and every bound is checked against explicit limits, far above real
use, so that no schema can make a grammar that exhausts the parser (each refusal is a 400 naming
the keyword). `GrammarBuilder` embeds several schemas in one larger grammar (the tool-call
formats in `llmedge.prompting.tool_formats` use it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from llmedge.errors import InvalidRequestError
from llmedge.prompting.schema_rules import (
    QUANTIFIER,
    check_grammar,
    converter_class,
    gbnf_literal,
    in_dependency_order,
)

__all__ = [
    "GrammarBuilder",
    "check_schema",
    "gbnf_literal",
    "json_object_grammar",
    "relax_schema",
    "schema_grammar",
]

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

# The limits, each far above what a real schema asks for.
# llama.cpp expands a bounded repetition into one rule per optional item, and past 2000 it
# refuses a minimum and stops enforcing a maximum: a larger bound cannot be promised.
MAX_REPETITIONS = 2000  # minLength, maxLength, minItems, maxItems
MAX_PATTERN_REPETITIONS = 1000  # each {m,n} in a pattern (written as nested groups)
MAX_PATTERN_CHARS = 8192
MAX_SCHEMA_DEPTH = 64  # subschemas inside subschemas
MAX_SCHEMA_OBJECTS = 10_000  # JSON objects in one schema (each property's schema is one)
MAX_SCHEMA_VALUES = 100_000  # every value in it, enum entries included
_BOUNDS = (("minLength", "maxLength"), ("minItems", "maxItems"))


def _unsupported(keyword: str, where: str, param: str) -> InvalidRequestError:
    place = f" at {where}" if where else ""
    return InvalidRequestError(
        f"JSON schema keyword {keyword!r}{place} cannot be enforced while sampling; "
        "remove it from the schema and check it in your own code",
        param=param,
        code="unsupported_schema",
    )


def _too_large(
    keyword: str, here: str, value: object, limit: int, param: str
) -> InvalidRequestError:
    return InvalidRequestError(
        f"JSON schema keyword {keyword!r} at {here} is {value}, more than the {limit} this server "
        "builds a grammar for; lower it, or drop it and check the bound in your own code",
        param=param,
        code="schema_too_complex",
    )


def _check_bounds(schema: Mapping[str, Any], param: str, where: str) -> None:
    """Repetition bounds are integers within their limits, and a minimum is not above its
    maximum; a pattern is a string whose own quantifiers stay within their limit."""
    for pair in _BOUNDS:
        for keyword in pair:
            value = schema.get(keyword)
            if value is None:
                continue
            here = f"{where}.{keyword}" if where else keyword
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidRequestError(
                    f"{here} must be a non-negative integer, not {value!r}", param=param
                )
            if value > MAX_REPETITIONS:
                raise _too_large(keyword, here, value, MAX_REPETITIONS, param)
        lo, hi = schema.get(pair[0]), schema.get(pair[1])
        if lo is not None and hi is not None and lo > hi:
            raise InvalidRequestError(
                f"{pair[0]} {lo} is more than {pair[1]} {hi}{' at ' + where if where else ''}: "
                "no value can satisfy both",
                param=param,
            )
    pattern = schema.get("pattern")
    if pattern is None:
        return
    here = f"{where}.pattern" if where else "pattern"
    if not isinstance(pattern, str):
        raise InvalidRequestError(f"{here} must be a string", param=param)
    if len(pattern) > MAX_PATTERN_CHARS:
        raise _too_large("pattern", here, f"{len(pattern)} characters", MAX_PATTERN_CHARS, param)
    for match in QUANTIFIER.finditer(pattern):
        largest = max(int(n) for n in match.groups() if n)
        if largest > MAX_PATTERN_REPETITIONS:
            raise _too_large("pattern", here, match.group(0), MAX_PATTERN_REPETITIONS, param)


def _check_size(schema: object, param: str) -> None:
    """Refuse a schema too large to convert quickly (conversion runs while the request is read)."""
    objects = values = 0
    pending = [schema]
    while pending:
        value = pending.pop()
        values += 1
        if isinstance(value, Mapping):
            objects += 1
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
        if objects > MAX_SCHEMA_OBJECTS or values > MAX_SCHEMA_VALUES:
            raise InvalidRequestError(
                f"the JSON schema holds more than {MAX_SCHEMA_OBJECTS} objects or "
                f"{MAX_SCHEMA_VALUES} values, more than this server builds a grammar for; "
                "simplify it",
                param=param,
                code="schema_too_complex",
            )


def check_schema(schema: object, param: str, where: str = "", depth: int = 0) -> None:
    """Refuse a schema whose every constraint the grammar could not enforce, or whose size,
    bounds or nesting are beyond the limits a grammar is built for."""
    if depth == 0:
        _check_size(schema, param)
    if isinstance(schema, bool):
        return
    if not isinstance(schema, Mapping):
        raise InvalidRequestError(
            f"a JSON schema must be an object{' at ' + where if where else ''}", param=param
        )
    if depth > MAX_SCHEMA_DEPTH:
        raise InvalidRequestError(
            f"the JSON schema nests more than {MAX_SCHEMA_DEPTH} levels deep (at {where}); "
            "flatten it, or move the deepest parts into $defs",
            param=param,
            code="schema_too_complex",
        )
    _check_bounds(schema, param, where)
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
            if not types or any(not isinstance(t, str) or t not in _TYPES for t in types):
                raise InvalidRequestError(
                    f"unknown JSON schema type {value!r} at {here}", param=param
                )
        if keyword == "$ref" and not (isinstance(value, str) and value.startswith("#/")):
            raise InvalidRequestError(
                f"only local references ('#/...') are allowed, not {value!r}", param=param
            )
        if keyword in ("required", "enum") and not isinstance(value, list):
            raise InvalidRequestError(f"{here} must be a list", param=param)
        if keyword in ("properties", "$defs", "definitions"):
            if not isinstance(value, Mapping):
                raise InvalidRequestError(f"{here} must be an object", param=param)
            for name, sub in value.items():
                check_schema(sub, param, f"{here}.{name}", depth + 1)
        elif keyword in ("anyOf", "oneOf", "allOf", "prefixItems"):
            if not isinstance(value, list) or not value:
                raise InvalidRequestError(f"{here} must be a non-empty list", param=param)
            for i, sub in enumerate(value):
                check_schema(sub, param, f"{here}.{i}", depth + 1)
        elif keyword in ("items", "additionalProperties") and not isinstance(value, bool):
            check_schema(value, param, here, depth + 1)


def _within_limits(keyword: str, value: Any) -> bool:
    if keyword == "pattern":
        return (
            isinstance(value, str)
            and len(value) <= MAX_PATTERN_CHARS
            and all(
                max(int(n) for n in m.groups() if n) <= MAX_PATTERN_REPETITIONS
                for m in QUANTIFIER.finditer(value)
            )
        )
    if keyword in ("minLength", "maxLength", "minItems", "maxItems"):
        return isinstance(value, int) and 0 <= value <= MAX_REPETITIONS
    return True


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
        elif (keyword == "format" and value not in _FORMATS) or not _within_limits(keyword, value):
            continue
        elif keyword in _ENFORCED or keyword in _ANNOTATIONS:
            kept[keyword] = relax_schema(value) if keyword not in ("enum", "const") else value
    return kept


class GrammarBuilder:
    """Collects the rules of one grammar: schemas converted to rules plus rules written by hand."""

    def __init__(self) -> None:
        self._converter = converter_class()(
            prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False
        )
        self._param = "response_format"

    def add_schema(
        self, name: str, schema: Mapping[str, Any], param: str, lenient: bool = False
    ) -> str:
        """Add the rules for documents valid under `schema`; returns the name of its rule.

        A keyword the grammar cannot enforce is refused, or dropped when `lenient`."""
        if lenient:
            schema = relax_schema(schema)
        check_schema(schema, param)
        self._param = param
        try:
            copy = json.loads(json.dumps(schema))  # resolve_refs rewrites $ref in place
            copy = self._converter.resolve_refs(copy, name)
            return str(self._converter.visit(copy, name))
        except InvalidRequestError as exc:
            raise InvalidRequestError(str(exc), param=param, code=exc.code) from exc
        except RecursionError as exc:
            raise InvalidRequestError(
                "the JSON schema (or a pattern in it) nests too deeply to build a grammar for",
                param=param,
                code="schema_too_complex",
            ) from exc
        except (AssertionError, AttributeError, ValueError, KeyError, TypeError) as exc:
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
        ordered = in_dependency_order(rules, "root")
        text = "\n".join(f"{name} ::= {body}" for name, body in ordered)
        return check_grammar(text, self._converter.repetitions, self._param)


def schema_grammar(schema: Mapping[str, Any], param: str = "response_format") -> str:
    """A grammar whose sentences are exactly the JSON documents `schema` accepts."""
    builder = GrammarBuilder()
    return builder.build(builder.add_schema("doc", schema, param))


def json_object_grammar() -> str:
    """A grammar for any JSON object (OpenAI's `json_object` mode, Ollama's `format: "json"`)."""
    return schema_grammar({"type": "object"})

"""Validation errors in the client's terms: the field path as the client wrote it and what the
field takes, never pydantic's internals (`stop.str`, `input.constrained-str`, "valid dictionary").

A field that takes one of several shapes (a union) fails once per shape; the error reported is
the one from the shape the value has (a list for a list), or, when the value has none of the
shapes, what the field takes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

# What a field of several shapes takes, by its path (`*` for any list index).
EXPECTED = {
    "stop": "a string or a list of at most 4 strings",
    "stop_sequences": "a list of strings",
    "input": "a string, a list of strings, or token ids",
    "prompt": "a string, a list of strings, token ids, or a list of token-id lists",
    "messages.*.content": "a string or a list of content parts",
    "tool_choice": '"none", "auto", "required", or a named function',
    "format": '"json" or a JSON schema',
    "system": "a string or a list of text blocks",
    "keep_alive": 'seconds, or a duration such as "5m"',
}
# What the items of a list field are called, for "at most N …".
ITEMS = {"stop": "sequences", "stop_sequences": "sequences", "messages": "messages"}
_BOUNDS = {
    "less_than_equal": "at most",
    "greater_than_equal": "at least",
    "less_than": "less than",
    "greater_than": "more than",
}
_BOUNDS_CTX = {
    "less_than_equal": "le",
    "greater_than_equal": "ge",
    "less_than": "lt",
    "greater_than": "gt",
}
_FIELD = re.compile(r"[a-z0-9_]+")  # field names and dict keys; shapes have other characters
_PRIMITIVES = frozenset({"str", "int", "float", "bool", "dict", "list", "none", "bytes"})
# Errors that mean "this value is not of that shape" rather than "this value is wrong".
_SHAPE_ERRORS = re.compile(
    r".*_type$|.*_parsing$|int_from_float|literal_error|is_instance_of|none_required"
)


def _is_tag(part: Any) -> bool:
    """A location part that names a shape of a union, not a field the client wrote."""
    return isinstance(part, str) and (part in _PRIMITIVES or not _FIELD.fullmatch(part))


def _path(loc: Sequence[Any]) -> str:
    return ".".join(str(part) for part in loc if not _is_tag(part))


def _pattern(loc: Sequence[Any]) -> str:
    return ".".join("*" if isinstance(p, int) else str(p) for p in loc if not _is_tag(p))


def _describe(error: dict[str, Any], loc: list[Any]) -> tuple[str, str | None]:
    kind, ctx = error.get("type", ""), error.get("ctx") or {}
    if kind == "field_error":
        loc = [*loc, ctx["field"]]
    param = _path(loc) or None
    where = param or "the request body"
    if kind == "json_invalid":
        return "the request body is not valid JSON", None
    if kind == "field_error":
        return f"{where}: {ctx['reason']}", param
    if kind == "extra_forbidden":
        return f"unsupported field {param!r}: llmedge does not implement it; remove it", param
    if kind == "missing":
        return f"{where} is required", param
    if kind in ("model_attributes_type", "dict_type", "model_type") and not param:
        return "the request body must be a JSON object", None
    if kind == "too_long":
        items = ITEMS.get(_pattern(loc), "items")
        return f"{where}: at most {ctx.get('max_length')} {items}", param
    if kind == "too_short" and ctx.get("min_length") == 1:
        return f"{where}: must not be empty", param
    if kind == "too_short":
        items = ITEMS.get(_pattern(loc), "items")
        return f"{where}: at least {ctx.get('min_length')} {items}", param
    if kind == "string_too_short" and ctx.get("min_length") == 1:
        return f"{where}: must not be empty", param
    if kind in _BOUNDS:
        bound = ctx[_BOUNDS_CTX[kind]]
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        return f"{where}: {_BOUNDS[kind]} {bound}", param
    if _SHAPE_ERRORS.fullmatch(kind) and _pattern(loc) in EXPECTED:
        return f"{where}: {EXPECTED[_pattern(loc)]}", param
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    message = message.removeprefix("Input ")
    return f"{where}: {message}", param


def _clean(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**e, "loc": [p for p in e.get("loc", ()) if p != "body"]} for e in errors]


def validation_message(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    """(message, param) for the first problem among pydantic's `errors`."""
    errors = _clean(errors)
    while True:
        first = errors[0]
        loc = first["loc"]
        at = next((i for i, part in enumerate(loc) if _is_tag(part)), None)
        if at is None:
            return _describe(first, loc)
        prefix = loc[:at]
        members = [
            e for e in errors if e["loc"][:at] == prefix and len(e["loc"]) > at
            and _is_tag(e["loc"][at])
        ]  # fmt: skip
        # A shape the value does not have fails at the union itself with a shape error.
        fitting = [
            e for e in members
            if len(e["loc"]) > at + 1 or not _SHAPE_ERRORS.fullmatch(e.get("type", ""))
        ]  # fmt: skip
        if not fitting or _all_alike(fitting):
            # No shape fits (or every shape fails the same item the same way): say what it takes.
            expected = EXPECTED.get(_pattern(prefix), "a value of another type")
            param = _path(prefix) or None
            return f"{param or 'the request body'}: {expected}", param
        # Otherwise follow the shape that got furthest into the value.
        best = max(fitting, key=lambda e: len(e["loc"]))["loc"][at]
        errors = [
            {**e, "loc": e["loc"][:at] + e["loc"][at + 1 :]}
            for e in fitting
            if e["loc"][at] == best
        ]


def _all_alike(errors: list[dict[str, Any]]) -> bool:
    """Several shapes, each failing at the same item for the item's shape."""
    patterns = {_pattern(e["loc"]) for e in errors}
    shaped = all(_SHAPE_ERRORS.fullmatch(e.get("type", "")) for e in errors)
    return len(errors) > 1 and len(patterns) == 1 and shaped

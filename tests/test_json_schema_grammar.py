"""JSON schema → GBNF: grammars llama.cpp accepts, and schemas it cannot enforce refused by name."""

from __future__ import annotations

import datetime
from typing import Any, Literal

import pytest
from grammar_check import grammar_parses
from pydantic import BaseModel, Field

from llmedge import InvalidRequestError
from llmedge.prompting.json_schema import (
    check_schema,
    gbnf_literal,
    json_object_grammar,
    relax_schema,
    schema_grammar,
)


class Address(BaseModel):
    street: str
    zip_code: str = Field(pattern=r"^[0-9]{5}$")


class Person(BaseModel):
    name: str = Field(max_length=30)
    kind: Literal["friend", 'say "hi"', "back\\slash"]
    born: datetime.date
    address: Address | None = None
    tags: list[str] = Field(max_length=3)
    scores: tuple[int, float]


SCHEMAS: dict[str, dict[str, Any]] = {
    "pydantic-nested": Person.model_json_schema(),
    "any-object": {"type": "object"},
    "string": {"type": "string", "minLength": 1, "maxLength": 5},
    "types-list": {"type": ["integer", "null"]},
    "const-and-enum": {"const": {"a": [1, "two"]}},
    "uuid": {"type": "string", "format": "uuid"},
    "open-object": {
        "type": "object",
        "properties": {"x": {"type": "boolean"}},
        "additionalProperties": {"type": "number"},
    },
}


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_supported_schema_gives_a_grammar_llama_cpp_parses(
    llama_vocab: Any, name: str
) -> None:
    grammar = schema_grammar(SCHEMAS[name])
    assert grammar_parses(llama_vocab, grammar), grammar


def test_json_strings_may_not_hold_raw_control_characters() -> None:
    grammar = json_object_grammar()
    char_rule = next(line for line in grammar.splitlines() if line.startswith("char ::="))
    assert r"\x00-\x1F" in char_rule


@pytest.mark.parametrize(
    ("text", "literal"),
    [('say "hi"', r'"say \"hi\""'), ("a\\b", r'"a\\b"'), ("line\nbreak", r'"line\nbreak"')],
)
def test_literals_escape_quotes_backslashes_and_newlines(text: str, literal: str) -> None:
    assert gbnf_literal(text) == literal


@pytest.mark.parametrize(
    ("schema", "keyword"),
    [
        ({"type": "integer", "minimum": 0}, "minimum"),
        ({"type": "array", "items": {"type": "string"}, "uniqueItems": True}, "uniqueItems"),
        (
            {"type": "object", "properties": {"a": {"type": "number", "multipleOf": 2}}},
            "multipleOf",
        ),
        ({"type": "string", "format": "email"}, "format: email"),
        ({"not": {"type": "string"}}, "not"),
        ({"type": "object", "patternProperties": {"^a": {}}}, "patternProperties"),
    ],
)
def test_a_keyword_the_grammar_cannot_enforce_is_refused_by_name(
    schema: dict[str, Any], keyword: str
) -> None:
    with pytest.raises(InvalidRequestError, match=keyword) as caught:
        schema_grammar(schema, param="response_format.json_schema.schema")
    assert caught.value.param == "response_format.json_schema.schema"
    assert caught.value.code == "unsupported_schema"


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "banana"},
        {"$ref": "https://example.invalid/schema.json"},
        {"properties": []},
        {"anyOf": []},
        ["not", "a", "schema"],
    ],
)
def test_malformed_schemas_are_refused(schema: Any) -> None:
    with pytest.raises(InvalidRequestError):
        check_schema(schema, "format")


def test_relaxing_drops_only_what_cannot_be_enforced() -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 1, "description": "count"}},
        "required": ["n"],
        "uniqueItems": True,
    }
    assert relax_schema(schema) == {
        "type": "object",
        "properties": {"n": {"type": "integer", "description": "count"}},
        "required": ["n"],
    }

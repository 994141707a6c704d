"""Grammar building cannot overflow: bounds become `{m,n}` (no nesting), every limit is explicit
and refused by name, and any schema either gives a grammar llama.cpp parses or a 400.

The crash this guards against: a `maxLength` of 18,750 used to be written as 18,750 nested
groups, and llama.cpp's recursive grammar parser overflowed its stack (SIGSEGV). Past 2000,
llama.cpp refuses a minimum count and stops enforcing a maximum, so that is the limit.
"""

from __future__ import annotations

from typing import Any

import pytest
from grammar_check import grammar_allows, grammar_parses
from hypothesis import HealthCheck, given, settings
from schema_strategies import SCHEMAS, deep_schema

from llmedge import InvalidRequestError
from llmedge.prompting.json_schema import (
    MAX_PATTERN_REPETITIONS,
    MAX_REPETITIONS,
    MAX_SCHEMA_DEPTH,
    MAX_SCHEMA_OBJECTS,
    relax_schema,
    schema_grammar,
)
from llmedge.prompting.schema_rules import (
    MAX_GRAMMAR_NESTING,
    MAX_TOTAL_REPETITIONS,
    grammar_nesting,
)

PARAM = "response_format.json_schema.schema"


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "maxLength": MAX_REPETITIONS},
        {"type": "string", "maxLength": MAX_REPETITIONS, "minLength": MAX_REPETITIONS},
        {"type": "array", "items": {"type": "integer"}, "maxItems": MAX_REPETITIONS},
        {"type": "array", "items": {"type": "string", "maxLength": 50}, "minItems": 2000},
        deep_schema(MAX_SCHEMA_DEPTH - 1, {"type": "string", "maxLength": MAX_REPETITIONS}),
    ],
)
def test_large_bounds_give_flat_grammars_llama_cpp_parses(llama_vocab: Any, schema: Any) -> None:
    grammar = schema_grammar(schema)
    assert grammar_nesting(grammar) < 20
    assert grammar_parses(llama_vocab, grammar)


@pytest.mark.parametrize(
    ("schema", "keyword"),
    [
        ({"type": "string", "maxLength": 18_750}, "maxLength"),
        ({"type": "string", "minLength": MAX_REPETITIONS + 1}, "minLength"),
        ({"type": "array", "items": {}, "maxItems": 10**12}, "maxItems"),
        ({"type": "array", "minItems": MAX_REPETITIONS + 1}, "minItems"),
        ({"type": "string", "pattern": f"^a{{0,{MAX_PATTERN_REPETITIONS + 1}}}$"}, "pattern"),
        ({"type": "string", "pattern": "^" + "a" * 9000 + "$"}, "pattern"),
        (deep_schema(MAX_SCHEMA_DEPTH + 1, {"type": "null"}), "nests more than"),
        (
            {
                "type": "object",
                "properties": {
                    f"p{i}": {"type": "string", "maxLength": MAX_REPETITIONS}
                    for i in range(MAX_TOTAL_REPETITIONS // MAX_REPETITIONS + 1)
                },
            },
            "add up to",
        ),
    ],
)
def test_a_bound_past_its_limit_is_refused_naming_the_keyword(
    schema: dict[str, Any], keyword: str
) -> None:
    with pytest.raises(InvalidRequestError, match=keyword) as caught:
        schema_grammar(schema, param=PARAM)
    assert caught.value.param == PARAM
    assert caught.value.code == "schema_too_complex"


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "minLength": 5, "maxLength": 3},
        {"type": "array", "minItems": 2, "maxItems": 1},
        {"type": "string", "maxLength": -1},
        {"type": "string", "maxLength": "10"},
        {"type": "string", "maxLength": True},
        {"type": "string", "pattern": 5},
        {"type": "object", "required": "a"},
    ],
)
def test_malformed_bounds_are_refused(schema: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        schema_grammar(schema, param=PARAM)
    assert caught.value.param == PARAM


def test_an_advisory_schema_drops_bounds_past_the_limits() -> None:
    schema = {
        "type": "object",
        "properties": {"s": {"type": "string", "maxLength": 18_750, "pattern": "^a{0,99999}$"}},
    }
    assert relax_schema(schema) == {"type": "object", "properties": {"s": {"type": "string"}}}


def test_many_optional_members_give_a_grammar_llama_cpp_parses(llama_vocab: Any) -> None:
    def props(n: int) -> dict[str, Any]:
        return {f"p{i}": {"type": "integer"} for i in range(n)}

    # Past about a thousand, llama.cpp's guard used to refuse the group around the members.
    grammar = schema_grammar({"type": "object", "properties": props(2500)})
    assert grammar_parses(llama_vocab, grammar)
    assert grammar_allows(llama_vocab, grammar, '{"p0": 1, "p5": 2, "p2400": 3}')
    assert not grammar_allows(llama_vocab, grammar, '{"p5": 1, "p0": 2}')  # order is kept
    most = MAX_SCHEMA_OBJECTS - 2  # the object itself and its `properties` count too
    assert schema_grammar({"type": "object", "properties": props(most)})
    with pytest.raises(InvalidRequestError, match="objects"):
        schema_grammar({"type": "object", "properties": props(most + 1)})


def test_optional_members_grow_the_grammar_linearly() -> None:
    def size(n: int) -> int:
        props = {f"p{i}": {"type": "integer"} for i in range(n)}
        return len(schema_grammar({"type": "object", "properties": props}))

    assert size(800) < 2.2 * size(400)


def test_extra_members_follow_a_comma(llama_vocab: Any) -> None:
    grammar = schema_grammar(
        {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a"],
            "additionalProperties": {"type": "integer"},
        }
    )
    assert grammar_allows(llama_vocab, grammar, '{"a": 1, "b": 2, "x": 3, "y": 4}')
    assert grammar_allows(llama_vocab, grammar, '{"a": 1, "x": 3}')
    assert not grammar_allows(llama_vocab, grammar, '{"a": 1, "b": 2"x": 3}')


def test_bounds_hold_in_the_flat_form(llama_vocab: Any) -> None:
    grammar = schema_grammar({"type": "array", "items": {"type": "integer"}, "maxItems": 2})
    assert grammar_allows(llama_vocab, grammar, "[1, 2]")
    assert not grammar_allows(llama_vocab, grammar, "[1, 2, 3]")
    longest = schema_grammar({"type": "string", "maxLength": MAX_REPETITIONS})
    assert grammar_allows(llama_vocab, longest, '"' + "ab" * (MAX_REPETITIONS // 2) + '"')
    assert not grammar_allows(llama_vocab, longest, '"' + "ab" * (MAX_REPETITIONS // 2) + 'c"')
    word = schema_grammar({"type": "string", "minLength": 2, "maxLength": 3})
    assert grammar_allows(llama_vocab, word, '"abc"')
    assert not grammar_allows(llama_vocab, word, '"abcd"')
    assert not grammar_allows(llama_vocab, word, '"a"')


@given(schema=SCHEMAS)
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
def test_any_schema_gives_a_parseable_grammar_or_a_400(llama_vocab: Any, schema: Any) -> None:
    try:
        grammar = schema_grammar(schema, param=PARAM)
    except InvalidRequestError as exc:
        assert exc.http_status == 400 and exc.param == PARAM
        return
    assert grammar_nesting(grammar) <= MAX_GRAMMAR_NESTING
    assert grammar_parses(llama_vocab, grammar), grammar[:2000]

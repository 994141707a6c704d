"""Structured output, logprobs, n and limits through the official `openai` client, real model.

A schema-constrained answer validates because a grammar only lets the model write valid JSON,
however weak the model and however hot the sampling.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import httpx
import jsonschema_rs
import openai
import pytest
from pydantic import BaseModel, Field

pytestmark = pytest.mark.e2e

MODEL = "smollm2-135m"
SERVER_ENV = {"LLMEDGE_MAX_TOKENS_LIMIT": "512"}  # a rambling answer ends soon
ASK = [{"role": "user", "content": "Describe Paris."}]


class City(BaseModel):
    name: str = Field(max_length=20)
    country: Literal["France", "Japan", "Peru"]
    capital: bool
    population_millions: int


@pytest.mark.parametrize("seed", [1, 2])
def test_parse_with_a_pydantic_model_always_validates(client: openai.OpenAI, seed: int) -> None:
    reply = client.chat.completions.parse(
        model=MODEL, messages=ASK, response_format=City, temperature=1.2, seed=seed,
        max_tokens=80,
    )  # fmt: skip
    choice = reply.choices[0]
    assert choice.finish_reason == "stop"
    assert isinstance(choice.message.parsed, City)


def test_a_raw_json_schema_constrains_nested_arrays(client: openai.OpenAI) -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "colours": {
                "type": "array",
                "items": {"enum": ["red", "green", "blue"]},
                "minItems": 1,
                "maxItems": 3,
            },
            "ok": {"type": "boolean"},
        },
        "required": ["colours", "ok"],
        "additionalProperties": False,
    }
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Name colours."}], temperature=1.0,
        seed=5, max_tokens=60,
        response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}},
    )  # fmt: skip
    assert jsonschema_rs.validator_for(schema).is_valid(
        json.loads(reply.choices[0].message.content or "")
    )


def test_json_object_mode_answers_with_an_object(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=ASK, response_format={"type": "json_object"}, temperature=0,
        max_tokens=30,
    )  # fmt: skip
    if reply.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(reply.choices[0].message.content or ""), dict)
    else:  # cut by max_tokens: still the start of an object
        assert (reply.choices[0].message.content or "").startswith("{")


def test_a_schema_keyword_that_cannot_be_enforced_is_refused_by_name(
    client: openai.OpenAI,
) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 3}}}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=MODEL, messages=ASK,
            response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema}},
        )  # fmt: skip
    error = caught.value.body
    assert isinstance(error, dict) and error["code"] == "unsupported_schema"
    assert error["param"] == "response_format.json_schema.schema" and "minimum" in error["message"]


def test_logprobs_report_each_token_with_its_alternatives(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=ASK, temperature=0, max_tokens=6, logprobs=True, top_logprobs=3
    )
    choice = reply.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content is not None
    tokens = choice.logprobs.content
    assert len(tokens) == 6 and "".join(t.token for t in tokens) == choice.message.content
    for token in tokens:
        assert len(token.top_logprobs) == 3 and token.logprob <= 0
        ranked = [alt.logprob for alt in token.top_logprobs]
        assert ranked == sorted(ranked, reverse=True)
        assert token.top_logprobs[0].token == token.token  # greedy picks the likeliest
        assert bytes(token.bytes or []) == token.token.encode()


def test_n_choices_are_distinct_and_repeatable_with_a_seed(client: openai.OpenAI) -> None:
    def sample() -> Any:
        return client.chat.completions.create(
            model=MODEL, messages=ASK, temperature=1.3, seed=11, n=3, max_tokens=8
        )

    first, again = sample(), sample()
    texts = [c.message.content for c in first.choices]
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert texts == [c.message.content for c in again.choices]
    assert len(set(texts)) > 1
    assert 3 <= first.usage.completion_tokens <= 3 * 8  # counted over all choices


def test_max_completion_tokens_ends_the_answer_with_length(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=ASK, temperature=0, max_completion_tokens=3
    )
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 3


def test_completions_report_legacy_logprobs(client: openai.OpenAI) -> None:
    reply = client.completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=4, temperature=0, logprobs=2
    )
    logprobs = reply.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens and logprobs.top_logprobs
    assert "".join(logprobs.tokens) == reply.choices[0].text
    assert all(len(top) == 2 for top in logprobs.top_logprobs)
    assert logprobs.text_offset == sorted(logprobs.text_offset or [])


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"max_tokens": 100_000}, "max_tokens"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"audio": {"voice": "alloy"}}, "audio"),
        ({"logit_bias": {"one": 5}}, "logit_bias"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"n": 99}, "n"),
        ({"store": True}, "store"),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
    ],
)
def test_what_llmedge_cannot_honour_is_a_400_naming_the_field(
    base_url: str, extra: dict[str, Any], param: str
) -> None:
    body = {"model": MODEL, "messages": ASK, **extra}
    response = httpx.post(f"{base_url}/chat/completions", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"

"""docs/field-policy.md is true: its tables match the request models, every field the official
clients can send is in them, and on the real server each documented optional field gets its
policy's answer, with a value and with null (never a 5xx)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import anthropic.types.message_count_tokens_params as anthropic_count
import anthropic.types.message_create_params as anthropic_create
import httpx
import ollama._types as ollama_types
import openai.types.chat.completion_create_params as chat_params
import openai.types.completion_create_params as completion_params
import openai.types.embedding_create_params as embedding_params
import openai.types.responses.response_create_params as responses_params
import pytest
from pydantic import BaseModel

from server import anthropic_schemas, ollama_schemas, responses_schemas, schemas
from server.wire import is_advisory

DOC = Path(__file__).resolve().parent.parent / "docs" / "field-policy.md"
MODELS: dict[str, type[Any]] = {
    name: getattr(module, name)
    for module in (schemas, ollama_schemas, responses_schemas, anthropic_schemas)
    for name in dir(module)
    if isinstance(getattr(module, name), type)
}
_SECTION = re.compile(r"^### .* — `(\w+)`$")
_ROW = re.compile(r"^\| `([\w.]+)` \| (honoured|advisory|refused) \|")


def documented() -> dict[str, dict[str, str]]:
    """{model name: {field: policy}} as the document's tables say."""
    tables: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in DOC.read_text().splitlines():
        if match := _SECTION.match(line):
            current = tables.setdefault(match.group(1), {})
        elif (match := _ROW.match(line)) and current is not None:
            current[match.group(1)] = match.group(2)
    return tables


def policies(model: type[BaseModel]) -> dict[str, str]:
    """{field: policy} as the model implements it."""
    found = {
        info.alias or name: "advisory" if is_advisory(model, name) else "honoured"
        for name, info in model.model_fields.items()
    }
    return {**found, **dict.fromkeys(model.refused, "refused")}


def test_every_table_matches_its_request_model() -> None:
    tables = documented()
    assert len(tables) >= 15
    for name, table in tables.items():
        assert policies(MODELS[name]) == table, f"docs/field-policy.md is out of date for {name}"


def _typed_dict_keys(typed: Any, *more: str) -> set[str]:
    return set(typed.__required_keys__ | typed.__optional_keys__ | set(more))


# What the official clients can send, and the model that reads it.
CLIENT_FIELDS = [
    (_typed_dict_keys(chat_params.CompletionCreateParamsBase, "stream"), "ChatCompletionRequest"),
    (_typed_dict_keys(completion_params.CompletionCreateParamsBase, "stream"), "CompletionRequest"),
    (_typed_dict_keys(embedding_params.EmbeddingCreateParams), "EmbeddingRequest"),
    (_typed_dict_keys(responses_params.ResponseCreateParamsBase) | {"stream"}, "ResponsesRequest"),
    (set(ollama_types.ChatRequest.model_fields), "ChatRequest"),
    (set(ollama_types.GenerateRequest.model_fields), "GenerateRequest"),
    (set(ollama_types.EmbedRequest.model_fields), "EmbedRequest"),
    (set(ollama_types.EmbeddingsRequest.model_fields), "LegacyEmbeddingRequest"),
    (set(ollama_types.ShowRequest.model_fields), "ModelRequest"),
    (set(ollama_types.PullRequest.model_fields), "PullRequest"),
    (set(ollama_types.Options.model_fields), "Options"),
    (_typed_dict_keys(anthropic_create.MessageCreateParamsBase) | {"stream"}, "MessagesRequest"),
    (_typed_dict_keys(anthropic_count.MessageCountTokensParams), "CountTokensRequest"),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "model"), CLIENT_FIELDS, ids=[m for _, m in CLIENT_FIELDS])
def test_every_field_a_client_sends_has_a_policy(fields: set[str], model: str) -> None:
    table = documented()[model]
    assert sorted(fields - set(table)) == []


# --- on the real server: each optional field alone, with a value and with null --------------

MODEL = "smollm2-135m"
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}
# A valid value for each optional field; some need a companion field to be valid at all.
CHAT_VALUES: dict[str, Any] = {
    "audio": {"voice": "alloy", "format": "wav"},
    "frequency_penalty": 0.5,
    "function_call": "auto",
    "functions": [{"name": "f", "parameters": {"type": "object"}}],
    "logit_bias": {"198": -5},
    "logprobs": True,
    "max_completion_tokens": 2,
    "max_tokens": 2,
    "metadata": {"k": "v"},
    "modalities": ["text"],
    "model": MODEL,
    "moderation": {"policy": {"input": {"mode": "score"}}},
    "n": 2,
    "parallel_tool_calls": False,
    "prediction": {"type": "content", "content": "Hello"},
    "presence_penalty": 0.5,
    "prompt_cache_key": "k",
    "prompt_cache_options": {"ttl": "5m"},
    "prompt_cache_retention": "in_memory",
    "reasoning_effort": "low",
    "response_format": {"type": "json_object"},
    "safety_identifier": "user-1",
    "seed": 2**63 + 5,
    "service_tier": "auto",
    "stop": ["\n"],
    "store": False,
    "stream": True,
    "stream_options": {"include_usage": True},
    "temperature": 0,
    "tool_choice": "none",
    "tools": [WEATHER],
    "top_logprobs": 2,
    "top_p": 0.9,
    "top_k": 20,
    "min_p": 0.1,
    "repeat_penalty": 1.1,
    "speculative": False,
    "user": "user-1",
    "verbosity": "low",
    "web_search_options": {},
}
COMPLETION_VALUES: dict[str, Any] = {
    "best_of": 1,
    "echo": True,
    "frequency_penalty": 0.5,
    "logit_bias": {"198": -5},
    "logprobs": 2,
    "max_tokens": 2,
    "model": MODEL,
    "n": 2,
    "presence_penalty": 0.5,
    "seed": -(2**63),
    "stop": "\n",
    "stream": True,
    "stream_options": {"include_usage": True},
    "suffix": " and so on.",
    "temperature": 0,
    "top_p": 0.9,
    "top_k": 20,
    "min_p": 0.1,
    "repeat_penalty": 1.1,
    "speculative": False,
    "user": "user-1",
}
EMBEDDING_VALUES: dict[str, Any] = {
    "dimensions": 8,
    "encoding_format": "base64",
    "model": MODEL,
    "user": "user-1",
}
COMPANIONS = {"top_logprobs": {"logprobs": True}, "stream_options": {"stream": True}}
ROUTES = [
    ("chat/completions", "ChatCompletionRequest", CHAT_VALUES,
     {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}),
    ("completions", "CompletionRequest", COMPLETION_VALUES, {"prompt": "Hello", "max_tokens": 2}),
    ("embeddings", "EmbeddingRequest", EMBEDDING_VALUES, {"input": "Hello"}),
]  # fmt: skip
CASES = [
    (path, model, field, value, base)
    for path, model, values, base in ROUTES
    for field, value in values.items()
]


def test_the_sweep_covers_every_optional_field() -> None:
    required = {"messages", "prompt", "input"}
    for _, model, values, _ in ROUTES:
        assert set(documented()[model]) - required == set(values), model


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("path", "model", "field", "value", "base"),
    CASES,
    ids=[f"{path}:{field}" for path, _, field, _, _ in CASES],
)
def test_each_field_gets_its_policys_answer(
    base_url: str, path: str, model: str, field: str, value: Any, base: dict[str, Any]
) -> None:
    policy = documented()[model][field]
    with_value = {**base, **COMPANIONS.get(field, {}), field: value}
    answer = httpx.post(f"{base_url}/{path}", json=with_value, timeout=60)
    if policy == "refused":
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert error["param"] == field and field in error["message"]
    else:
        assert answer.status_code == 200, answer.text
    if field == "service_tier":
        assert answer.json()["service_tier"] == "default"  # echoed, as OpenAI does
    unset = {**base, field: None}
    if field == "max_tokens":  # unset, the answer would run to the end of the context
        unset["stop"] = [" ", "e", "a", "o"]
    with_null = httpx.post(f"{base_url}/{path}", json=unset, timeout=60)
    assert with_null.status_code == 200, with_null.text

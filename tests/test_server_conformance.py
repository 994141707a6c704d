"""What the server answers is valid under OpenAI's published schemas (vendored in tests/data):
chat, completions, embeddings and responses objects, and every event of their streams."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from openai_schema import schema_errors

pytestmark = pytest.mark.e2e

MODEL = "smollm2-135m"
ASK = [{"role": "user", "content": "Look up 'cat'."}]
CHAT_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {"name": "lookup", "parameters": {"type": "object", "properties": {
        "word": {"type": "string", "maxLength": 10}}, "required": ["word"]}},
}  # fmt: skip
RESPONSES_TOOL = {"type": "function", **CHAT_TOOL["function"]}


def _post(base_url: str, path: str, body: dict[str, Any]) -> Any:
    answer = httpx.post(f"{base_url}/{path}", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _events(base_url: str, path: str, body: dict[str, Any]) -> list[Any]:
    with httpx.stream("POST", f"{base_url}/{path}", json=body, timeout=60) as answer:
        lines = [line[5:].strip() for line in answer.iter_lines() if line.startswith("data:")]
    return [json.loads(line) for line in lines if line != "[DONE]"]


CHATS = [
    {"messages": ASK, "max_tokens": 4},
    {"messages": ASK, "max_tokens": 4, "logprobs": True, "top_logprobs": 2, "n": 2},
    {"messages": ASK, "max_tokens": 40, "tools": [CHAT_TOOL], "tool_choice": "required"},
]


@pytest.mark.parametrize("body", CHATS, ids=["text", "logprobs", "tools"])
def test_chat_completions_and_their_chunks(base_url: str, body: dict[str, Any]) -> None:
    request = {"model": MODEL, "temperature": 0, **body}
    assert (
        schema_errors("CreateChatCompletionResponse", _post(base_url, "chat/completions", request))
        == []
    )
    streamed = {**request, "stream": True, "stream_options": {"include_usage": True}}
    for chunk in _events(base_url, "chat/completions", streamed):
        assert schema_errors("CreateChatCompletionStreamResponse", chunk) == []


def test_completions_and_embeddings(base_url: str) -> None:
    request = {"model": MODEL, "prompt": ["a", "b"], "max_tokens": 3, "logprobs": 2}
    assert schema_errors("CreateCompletionResponse", _post(base_url, "completions", request)) == []
    for chunk in _events(base_url, "completions", {**request, "stream": True}):
        # The spec has no stream schema for completions; OpenAI's own chunks carry a null
        # finish_reason until the last, so that one field is read as the final object's.
        choices = [{**c, "finish_reason": c["finish_reason"] or "stop"} for c in chunk["choices"]]
        assert schema_errors("CreateCompletionResponse", {**chunk, "choices": choices}) == []
    # The spec types `embedding` as numbers only, so the base64 form is checked elsewhere.
    for inputs in (["a", "b"], [[504, 3658], [504]]):
        request = {"model": MODEL, "input": inputs, "encoding_format": "float"}
        answer = _post(base_url, "embeddings", request)
        assert schema_errors("CreateEmbeddingResponse", answer) == []


RESPONSES = [
    {"input": "Say hi.", "max_output_tokens": 4, "instructions": "Be brief.",
     "metadata": {"k": "v"}, "user": "u", "service_tier": "auto"},
    {"input": "Say hi.", "max_output_tokens": 40, "text": {"format": {
        "type": "json_schema", "name": "w", "schema": {"type": "object", "properties": {
            "w": {"type": "string", "maxLength": 5}}, "required": ["w"]}}}},
    {"input": ASK[0]["content"], "max_output_tokens": 40, "tools": [RESPONSES_TOOL],
     "tool_choice": "required"},
]  # fmt: skip


@pytest.mark.parametrize("body", RESPONSES, ids=["text", "json_schema", "tools"])
def test_responses_and_their_events(base_url: str, body: dict[str, Any]) -> None:
    request = {"model": MODEL, "temperature": 0, **body}
    response = _post(base_url, "responses", request)
    assert schema_errors("Response", response) == []
    if "metadata" in body:  # advisory fields the response echoes
        assert response["metadata"] == {"k": "v"} and response["user"] == "u"
        assert response["service_tier"] == "default"
    events = _events(base_url, "responses", {**request, "stream": True})
    assert events[-1]["type"] in ("response.completed", "response.incomplete")
    for event in events:
        assert schema_errors("ResponseStreamEvent", event) == [], event["type"]

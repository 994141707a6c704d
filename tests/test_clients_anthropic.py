"""The Anthropic Messages API driven by the official `anthropic` SDK, through `llmedge serve` on
the real model, with an API key the SDK sends as `x-api-key`."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import TypeAdapter

pytestmark = pytest.mark.e2e

KEY = "test-key"
SERVER_ENV = {"LLMEDGE_API_KEY": KEY}
MODEL = "smollm2-135m"
HI = [{"role": "user", "content": "Name a colour."}]
WEATHER: dict[str, Any] = {
    "name": "get_weather",
    "description": "The current weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
        "additionalProperties": False,
    },
}
EVENTS = TypeAdapter(RawMessageStreamEvent)
# The SDK has no `temperature` argument any more; the API still takes it.
GREEDY = {"temperature": 0}


@pytest.fixture(scope="module")
def host(base_url: str) -> str:
    return base_url.removesuffix("/v1")


@pytest.fixture
def claude(host: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=host, api_key=KEY, max_retries=0)


def test_a_message_is_valid_under_the_sdks_types(claude: anthropic.Anthropic) -> None:
    raw = claude.messages.with_raw_response.create(
        model=MODEL, max_tokens=8, messages=HI, system="Answer in one word.", extra_body=GREEDY
    )
    body = raw.http_response.json()
    message = Message.model_validate(body)
    assert message.type == "message" and message.role == "assistant"
    assert message.model == "smollm2-135m:q4_1" and message.id.startswith("msg_")
    assert message.content[0].type == "text" and message.content[0].text
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert 0 < message.usage.output_tokens <= 8 and message.usage.input_tokens > 5


def test_max_tokens_and_stop_sequences_name_their_stop(claude: anthropic.Anthropic) -> None:
    cut = claude.messages.create(model=MODEL, max_tokens=3, messages=HI, extra_body=GREEDY)
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 3
    whole = claude.messages.create(model=MODEL, max_tokens=24, messages=HI, extra_body=GREEDY)
    text = "".join(b.text for b in whole.content if b.type == "text")
    word = text.split()[1]
    stopped = claude.messages.create(
        model=MODEL, max_tokens=24, messages=HI, extra_body=GREEDY, stop_sequences=[word]
    )
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == word
    assert stopped.content[0].type == "text"
    assert stopped.content[0].text == text[: text.index(word)]


def test_a_stream_sends_anthropics_event_sequence(claude: anthropic.Anthropic) -> None:
    whole = claude.messages.create(model=MODEL, max_tokens=10, messages=HI, extra_body=GREEDY)
    with claude.messages.stream(
        model=MODEL, max_tokens=10, messages=HI, extra_body=GREEDY
    ) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(texts) == whole.content[0].text == final.content[0].text  # type: ignore[union-attr]
    assert final.stop_reason == whole.stop_reason and final.usage.output_tokens > 0
    raw = claude.messages.create(
        model=MODEL, max_tokens=10, messages=HI, extra_body=GREEDY, stream=True
    )
    kinds = [event.type for event in raw]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds[1:3] == ["content_block_start", "content_block_delta"]  # the SDK drops ping
    assert kinds.count("content_block_start") == kinds.count("content_block_stop") == 1


def test_streamed_events_are_valid_under_the_sdks_types(host: str) -> None:
    body = {"model": MODEL, "max_tokens": 6, "messages": HI, "stream": True}
    with httpx.stream(
        "POST", f"{host}/v1/messages", json=body, headers={"x-api-key": KEY}, timeout=60
    ) as response:
        data = [line[5:] for line in response.iter_lines() if line.startswith("data:")]
    raw = [json.loads(item) for item in data]
    assert raw[1] == {"type": "ping"}  # documented, but not among the SDK's event types
    events = [EVENTS.validate_python(item) for item in raw if item["type"] != "ping"]
    assert events[-1].type == "message_stop"


def test_a_tools_round_trip(claude: anthropic.Anthropic) -> None:
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Oslo?"}]
    first = claude.messages.create(
        model=MODEL, max_tokens=40, messages=messages, tools=[WEATHER], extra_body=GREEDY,
        tool_choice={"type": "tool", "name": "get_weather"},
    )  # fmt: skip
    assert first.stop_reason == "tool_use"
    (call,) = [b for b in first.content if b.type == "tool_use"]
    assert call.name == "get_weather" and set(call.input) == {"city"}
    assert call.id.startswith("toolu_")
    messages += [
        {"role": "assistant", "content": first.content},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "Sunny, 21C"}],
        },
    ]
    second = claude.messages.create(
        model=MODEL, max_tokens=12, messages=messages, tools=[WEATHER], extra_body=GREEDY,
        tool_choice={"type": "none"},
    )  # fmt: skip
    assert second.stop_reason in ("end_turn", "max_tokens")
    assert [b.type for b in second.content] == ["text"]
    counted = claude.messages.count_tokens(
        model=MODEL, messages=messages, tools=[WEATHER], tool_choice={"type": "none"}
    )
    assert counted.input_tokens == second.usage.input_tokens + (
        second.usage.cache_read_input_tokens or 0
    )


def test_a_streamed_tool_call_arrives_as_input_json(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model=MODEL, max_tokens=40, tools=[WEATHER], extra_body=GREEDY, tool_choice={"type": "any"},
        messages=[{"role": "user", "content": "Weather in Rome?"}],
    ) as stream:  # fmt: skip
        final = stream.get_final_message()
    (call,) = [b for b in final.content if b.type == "tool_use"]
    assert final.stop_reason == "tool_use" and isinstance(call.input, dict)
    assert set(call.input) == {"city"}


def test_errors_arrive_in_anthropics_shape(claude: anthropic.Anthropic, host: str) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.messages.create(model="no-such-model", max_tokens=4, messages=HI)
    assert missing.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": missing.value.body["error"]["message"]},  # type: ignore[index]
    }
    with pytest.raises(anthropic.BadRequestError) as bad:
        claude.messages.create(
            model=MODEL, max_tokens=4, messages=[{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": "AAAA"}}]}],
        )  # fmt: skip
    error = bad.value.body["error"]  # type: ignore[index]
    assert error["type"] == "invalid_request_error" and "'image' blocks" in error["message"]
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=host, api_key="wrong", max_retries=0).messages.create(
            model=MODEL, max_tokens=4, messages=HI
        )


def test_the_key_is_taken_from_either_header_and_the_version_header_is_tolerated(
    host: str,
) -> None:
    body = {"model": MODEL, "max_tokens": 2, "messages": HI}
    for headers in (
        {"x-api-key": KEY, "anthropic-version": "2023-06-01"},
        {"authorization": f"Bearer {KEY}", "anthropic-version": "2023-06-01"},
    ):
        assert (
            httpx.post(f"{host}/v1/messages", json=body, headers=headers, timeout=60).status_code
            == 200
        )
    refused = httpx.post(f"{host}/v1/messages", json=body)
    assert refused.status_code == 401 and refused.json()["type"] == "error"
    assert refused.json()["error"]["type"] == "authentication_error"

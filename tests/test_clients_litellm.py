"""litellm's `ollama/`, `ollama_chat/` and `openai/` providers against `llmedge serve` on the
real model: completion, stream and tools, as a user of litellm would call them."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch of the price list
litellm = pytest.importorskip("litellm")

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore::UserWarning")]  # litellm

MODEL = "smollm2-135m"
HI = [{"role": "user", "content": "Name a colour."}]
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
        },
    },
}


@pytest.fixture(scope="module")
def host(base_url: str) -> str:
    return base_url.removesuffix("/v1")


@pytest.mark.parametrize("provider", ["ollama", "ollama_chat", "openai"])
def test_a_completion_and_its_stream_agree(provider: str, host: str, base_url: str) -> None:
    where = (
        {"api_base": base_url, "api_key": "unused"} if provider == "openai" else {"api_base": host}
    )
    args = {"model": f"{provider}/{MODEL}", "messages": HI, "max_tokens": 8, "temperature": 0}
    reply = litellm.completion(**args, **where)
    text = reply.choices[0].message.content
    assert text and reply.usage.completion_tokens <= 8
    pieces = [
        chunk.choices[0].delta.content or ""
        for chunk in litellm.completion(**args, **where, stream=True)
        if chunk.choices
    ]
    assert "".join(pieces) == text


def test_openai_provider_forced_tool_call(base_url: str) -> None:
    reply = litellm.completion(
        model=f"openai/{MODEL}", api_base=base_url, api_key="unused", messages=HI,
        tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=40, temperature=0,
    )  # fmt: skip
    (call,) = reply.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    assert set(json.loads(call.function.arguments)) == {"city"}
    assert reply.choices[0].finish_reason == "tool_calls"


def test_ollama_chat_provider_sends_tools(host: str) -> None:
    reply = litellm.completion(
        model=f"ollama_chat/{MODEL}", api_base=host, messages=HI, tools=[WEATHER],
        max_tokens=30, temperature=0,
    )  # fmt: skip
    message = reply.choices[0].message
    calls = message.tool_calls or []
    assert message.content or calls  # the model may answer or call; both come back whole
    for call in calls:
        assert call.function.name == "get_weather"
        json.loads(call.function.arguments)

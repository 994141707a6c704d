"""Tool calling through the official `openai` client.

On the real model, calls are forced by `tool_choice` (a grammar), so every assertion holds by
mechanism. A scripted backend drives what no grammar forces: a model choosing a call in auto mode,
its text split across stream chunks at awkward places.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from fake_backend import ScriptedBackend, ScriptedModel
from scripted_server import serving

from llmedge import Engine, Settings, Store, pull

pytestmark = pytest.mark.e2e

MODEL = "smollm2-135m"
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 24},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME: dict[str, Any] = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def _weather_args(arguments: str) -> dict[str, Any]:
    args = json.loads(arguments)
    assert set(args) == {"city", "unit"} and args["unit"] in ("celsius", "fahrenheit")
    assert isinstance(args["city"], str) and len(args["city"]) <= 24
    return args


def test_required_tool_choice_returns_a_call_valid_under_its_schema(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL,
        messages=ASK,
        tools=[WEATHER, TIME],
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0,
        max_tokens=60,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    if call.function.name == "get_weather":
        _weather_args(call.function.arguments)
    else:
        assert call.function.name == "get_time" and json.loads(call.function.arguments) == {}


def test_a_named_tool_choice_calls_that_tool(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL,
        messages=ASK,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
        temperature=0.9,
        seed=3,
        max_tokens=60,
    )
    calls = reply.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather"]
    _weather_args(calls[0].function.arguments)


def test_streamed_tool_calls_accumulate_in_the_clients_stream_helper(
    client: openai.OpenAI,
) -> None:
    request: dict[str, Any] = {
        "model": MODEL,
        "messages": ASK,
        "tools": [WEATHER],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "temperature": 0,
        "max_tokens": 60,
    }
    deltas = []
    with client.chat.completions.stream(**request) as stream:
        for event in stream:
            if event.type == "chunk" and event.chunk.choices:
                deltas.append(event.chunk.choices[0].delta)
        final = stream.get_final_completion()
    streamed = [call for delta in deltas for call in delta.tool_calls or []]
    assert streamed and streamed[0].index == 0 and streamed[0].id
    assert streamed[0].function is not None and streamed[0].function.name == "get_weather"
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    _weather_args(call.function.arguments)


def _get_weather(city: str, unit: str) -> dict[str, Any]:
    return {"city": city, "temperature": 21 if unit == "celsius" else 70, "unit": unit}


def test_a_full_round_trip_feeds_the_result_back_for_an_answer(client: openai.OpenAI) -> None:
    messages: list[Any] = list(ASK)
    first = client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER], tool_choice="required",
        parallel_tool_calls=False, temperature=0, max_tokens=60,
    )  # fmt: skip
    message = first.choices[0].message
    messages.append(message)  # the client sends its own message object back, as its docs show
    for call in message.tool_calls or []:
        result = _get_weather(**json.loads(call.function.arguments))
        messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)})
    second = client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER], tool_choice="none",
        temperature=0, max_tokens=24,
    )  # fmt: skip
    answer = second.choices[0]
    assert answer.message.tool_calls is None and answer.message.content
    assert answer.finish_reason in ("stop", "length")
    alone = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=1)
    assert second.usage is not None and alone.usage is not None
    assert second.usage.prompt_tokens > alone.usage.prompt_tokens + 20  # the call and its result


# --- a scripted model: what auto mode does with whatever the model writes ------------------


@pytest.fixture
def scripted(
    settings: Settings, store: Store, smollm2_gguf: Path
) -> Iterator[tuple[str, ScriptedModel]]:
    pull(store, MODEL)
    model = ScriptedModel(ctx_tokens=8192)
    engine = Engine(settings, store, backend=ScriptedBackend(model))
    with serving(engine) as url:
        yield url, model
    engine.close()


CALL_IN_PIECES = (
    "Checking", " now.", "\n<tool", '_call>\n{"name": "get_', 'weather", "arguments": {"city": "Pa',
    'ris", "unit": "celsius"}}\n</tool_call>', "\n",
)  # fmt: skip


def test_auto_mode_streams_the_text_then_the_call(
    scripted: tuple[str, ScriptedModel],
) -> None:
    url, model = scripted
    model.enqueue(*CALL_IN_PIECES)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER], stream=True)
    chunks = [c.choices[0] for c in stream if c.choices]
    text = "".join(c.delta.content or "" for c in chunks)
    calls = [call for c in chunks for call in c.delta.tool_calls or []]
    assert text == "Checking now."
    assert len(calls) == 1 and calls[0].function is not None
    assert calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments or "") == {"city": "Paris", "unit": "celsius"}
    assert chunks[-1].finish_reason == "tool_calls"
    prompt = "".join(chr(t) for t in model.prompts[-1])
    assert '"name": "get_weather"' in prompt and "<tool_call>" in prompt  # tools were described


def test_auto_mode_answers_in_text_when_the_model_calls_nothing(
    scripted: tuple[str, ScriptedModel],
) -> None:
    url, model = scripted
    model.enqueue("It is ", "<tool", "s> I lack.")  # looks like a marker, is not one
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    reply = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER])
    assert reply.choices[0].message.content == "It is <tools> I lack."
    assert reply.choices[0].message.tool_calls is None
    assert reply.choices[0].finish_reason == "stop"


def test_a_call_to_a_tool_that_was_not_offered_stays_text(
    scripted: tuple[str, ScriptedModel],
) -> None:
    url, model = scripted
    invented = '<tool_call>{"name": "rm", "arguments": {}}</tool_call>'
    model.enqueue(invented)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    reply = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER])
    assert reply.choices[0].message.content == invented
    assert reply.choices[0].finish_reason == "stop"


def test_the_round_trip_history_reaches_the_model_folded(
    scripted: tuple[str, ScriptedModel],
) -> None:
    url, model = scripted
    model.enqueue(*CALL_IN_PIECES)
    model.enqueue("It is 21 degrees.")
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    messages: list[Any] = list(ASK)
    first = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER])
    message = first.choices[0].message
    messages.append(message)
    (call,) = message.tool_calls or []
    messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'})
    second = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER])
    assert second.choices[0].message.content == "It is 21 degrees."
    prompt = "".join(chr(t) for t in model.prompts[-1])
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"' in prompt
    assert '<tool_response>\n{"temp_c": 21}\n</tool_response>' in prompt

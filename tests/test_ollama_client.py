"""The Ollama API driven by the official `ollama` Python client: real model, real NDJSON streams."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import ollama
import pytest
from fake_backend import ScriptedBackend, ScriptedModel
from pydantic import BaseModel, Field
from scripted_server import serving

from llmedge import Engine, Settings, Store, pull

pytestmark = pytest.mark.e2e

MODEL = "smollm2-135m"
STORED = "smollm2-135m:q4_1"
GREEDY = {"temperature": 0, "num_predict": 10}
HI = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture
def host(base_url: str) -> str:
    return base_url.removesuffix("/v1")


@pytest.fixture
def client(host: str) -> ollama.Client:
    return ollama.Client(host=host)


def test_version_list_show_and_ps_describe_the_model(host: str, client: ollama.Client) -> None:
    assert httpx.get(f"{host}/api/version").json()["version"]  # the client has no call for it
    (listed,) = client.list().models
    assert listed.model == STORED and listed.size and listed.size > 50e6
    assert listed.details is not None and listed.details.family == "llama"
    assert listed.details.quantization_level == "Q4_1" and listed.details.parameter_size == "135M"
    shown = client.show(MODEL)
    assert shown.modelinfo is not None and shown.modelinfo["llama.context_length"] == 8192
    assert "<|im_start|>" in (shown.template or "") and "tools" in (shown.capabilities or [])
    (running,) = client.ps().models
    assert running.model == STORED and running.context_length and running.context_length > 0


def test_chat_answers_and_a_stream_gives_the_same_text(client: ollama.Client) -> None:
    whole = client.chat(model=MODEL, messages=HI, options=GREEDY)
    assert whole.done and whole.done_reason in ("stop", "length")
    assert whole.message.role == "assistant" and whole.message.content
    assert whole.eval_count and 0 < whole.eval_count <= 10 and whole.prompt_eval_count
    assert whole.total_duration and whole.eval_duration is not None
    parts = list(client.chat(model=MODEL, messages=HI, options=GREEDY, stream=True))
    assert len(parts) > 2 and parts[-1].done and not any(p.done for p in parts[:-1])
    assert "".join(p.message.content or "" for p in parts) == whole.message.content
    assert parts[-1].eval_count == whole.eval_count


def test_generate_streams_a_completion(client: ollama.Client) -> None:
    parts = list(
        client.generate(model=MODEL, prompt="Why is the sky blue?", options=GREEDY, stream=True)
    )
    assert parts[-1].done and parts[-1].eval_count == 10 and parts[-1].done_reason == "length"
    raw = client.generate(
        model=MODEL, prompt="1, 2, 3,", raw=True, options={**GREEDY, "num_predict": 4},
        logprobs=True, top_logprobs=2,
    )  # fmt: skip
    assert raw.response and raw.eval_count == 4 and raw.logprobs is not None
    assert "".join(lp.token for lp in raw.logprobs) == raw.response
    assert all(len(lp.top_logprobs or []) == 2 and lp.logprob <= 0 for lp in raw.logprobs)


class Colour(BaseModel):
    name: str = Field(max_length=16)
    warm: bool
    shade: Literal["light", "dark"]


def test_a_json_schema_format_always_validates(client: ollama.Client) -> None:
    for seed in (1, 2):
        reply = client.chat(
            model=MODEL, messages=HI, format=Colour.model_json_schema(),
            options={"temperature": 1.0, "seed": seed, "num_predict": 60},
        )  # fmt: skip
        Colour.model_validate_json(reply.message.content or "")


def test_embed_gives_one_normalised_vector_per_input(client: ollama.Client) -> None:
    reply = client.embed(model=MODEL, input=["a cat", "a dog", "a cat"])
    vectors = reply.embeddings
    assert len(vectors) == 3 and len(vectors[0]) == 576 and reply.prompt_eval_count
    assert vectors[0] == pytest.approx(vectors[2], abs=1e-5)
    assert sum(v * v for v in vectors[1]) == pytest.approx(1, abs=1e-3)
    legacy = client.embeddings(model=MODEL, prompt="a cat")
    assert list(legacy.embedding) == pytest.approx(vectors[0], abs=1e-5)


def test_pull_streams_progress_then_success(client: ollama.Client) -> None:
    statuses = [p.status for p in client.pull(MODEL, stream=True)]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert client.pull(MODEL).status == "success"


def test_errors_arrive_as_ollama_errors(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as missing:
        client.chat(model="no-such-model", messages=HI)
    assert missing.value.status_code == 404 and "not in the store" in missing.value.error
    with pytest.raises(ollama.ResponseError) as too_big:
        client.chat(model=MODEL, messages=HI, options={"num_ctx": 1 << 20})
    assert too_big.value.status_code == 400 and "--ctx 1048576" in too_big.value.error
    with pytest.raises(ollama.ResponseError) as unknown:
        client.chat(model=MODEL, messages=HI, options={"mirostat": 1})
    assert unknown.value.status_code == 400 and "mirostat" in unknown.value.error
    with pytest.raises(ollama.ResponseError) as images:
        client.chat(model=MODEL, messages=[{**HI[0], "images": ["aGk="]}])
    assert images.value.status_code == 400 and "images" in images.value.error


def test_num_ctx_up_to_the_loaded_context_holds_the_prompt_to_it(client: ollama.Client) -> None:
    long = [{"role": "user", "content": "word " * 300}]
    assert client.chat(model=MODEL, messages=long, options={**GREEDY, "num_ctx": 4096}).done
    with pytest.raises(ollama.ResponseError) as cut:
        client.chat(model=MODEL, messages=long, options={**GREEDY, "num_ctx": 64})
    assert cut.value.status_code == 400 and "64" in cut.value.error
    room = client.generate(
        model=MODEL, prompt="1, 2, 3,", raw=True, options={"num_ctx": 12, "num_predict": 100}
    )
    assert room.prompt_eval_count and room.eval_count
    assert room.prompt_eval_count + room.eval_count <= 12 and room.done_reason == "length"


def test_what_clients_add_is_accepted(host: str) -> None:
    """litellm's `images: []`, LangChain's all-null options, fields Ollama clients keep in
    messages, `name` for `model`, and bodies sent without a JSON content type."""
    message = {"role": "user", "content": "Hi", "images": [], "id": "m1", "thinking": None}
    options = {"num_ctx": None, "mirostat": None, "temperature": None, "num_predict": 2}
    body = {"model": MODEL, "messages": [message], "options": options, "stream": False}
    raw = json.dumps(body).encode()
    for headers in ({}, {"content-type": "application/x-www-form-urlencoded"}):
        answer = httpx.post(f"{host}/api/chat", content=raw, headers=headers, timeout=60)
        assert answer.status_code == 200 and answer.json()["done"], answer.text
    generate = {"model": MODEL, "prompt": "Hi", "images": None, "stream": False,
                "options": {"num_predict": 2}}  # fmt: skip
    answer = httpx.post(f"{host}/api/generate", content=json.dumps(generate).encode(), timeout=60)
    assert answer.status_code == 200 and answer.json()["response"] is not None
    shown = httpx.post(f"{host}/api/show", content=json.dumps({"name": MODEL}).encode())
    assert shown.status_code == 200 and shown.json()["details"]["family"] == "llama"
    assert httpx.post(f"{host}/api/pull", json={"name": MODEL, "stream": False}).json() == {
        "status": "success"
    }
    assert httpx.head(f"{host}/").status_code == 200
    assert httpx.head(f"{host}/api/version").status_code == 200


def test_embed_truncates_to_the_context_unless_told_not_to(host: str) -> None:
    long = "word " * 6000  # past the 4096-token context
    cut = httpx.post(f"{host}/api/embed", json={"model": MODEL, "input": long}, timeout=120)
    assert cut.status_code == 200 and cut.json()["prompt_eval_count"] == 4096
    refused = httpx.post(
        f"{host}/api/embed", json={"model": MODEL, "input": long, "truncate": False}
    )
    assert refused.status_code == 400 and "context" in refused.json()["error"]
    small = httpx.post(
        f"{host}/api/embed",
        json={"model": MODEL, "input": long, "options": {"num_ctx": 16}},
    )
    assert small.status_code == 200 and small.json()["prompt_eval_count"] == 16


# --- tool calls, scripted: Ollama's chat format for calls, arguments as objects ------------


@pytest.fixture
def scripted(
    settings: Settings, store: Store, smollm2_gguf: Path
) -> Iterator[tuple[ollama.Client, ScriptedModel]]:
    pull(store, MODEL)
    model = ScriptedModel(ctx_tokens=8192)
    engine = Engine(settings, store, backend=ScriptedBackend(model))
    with serving(engine) as url:
        yield ollama.Client(host=url), model
    engine.close()


def get_weather(city: str) -> str:
    """Get the weather in a city.

    Args:
      city: the city's name
    """
    return f"Sunny in {city}"


def test_a_tool_round_trip_with_a_python_function_as_the_tool(
    scripted: tuple[ollama.Client, ScriptedModel],
) -> None:
    client, model = scripted
    model.enqueue(
        "<tool_call>", '{"name": "get_weather", ', '"arguments": {"city": "Oslo"}}', "</tool_call>"
    )
    model.enqueue("It is ", "sunny.")
    messages: list[Any] = [{"role": "user", "content": "Weather in Oslo?"}]
    first = client.chat(model=MODEL, messages=messages, tools=[get_weather], stream=True)
    parts = list(first)
    calls = [c for p in parts for c in p.message.tool_calls or []]
    assert [(c.function.name, dict(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Oslo"})
    ]
    messages.append(
        {"role": "assistant", "content": "", "tool_calls": [c.model_dump() for c in calls]}
    )
    result = get_weather(**calls[0].function.arguments)
    messages.append({"role": "tool", "content": result, "tool_name": "get_weather"})
    second = client.chat(model=MODEL, messages=messages, tools=[get_weather])
    assert second.message.content == "It is sunny." and not second.message.tool_calls
    prompt = "".join(chr(t) for t in model.prompts[-1])
    assert '"description": "Get the weather in a city."' in prompt
    assert json.dumps({"name": "get_weather", "arguments": {"city": "Oslo"}}) in prompt
    assert "<tool_response>\nSunny in Oslo\n</tool_response>" in prompt

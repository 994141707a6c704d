"""The server as a process, driven by the official `openai` client on the real model."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

pytestmark = pytest.mark.e2e

MODEL = "smollm2-135m"
ASK = [{"role": "user", "content": "Name three colours."}]


def _greedy(client: openai.OpenAI, **kwargs: object) -> openai.types.chat.ChatCompletion:
    args: dict = {"model": MODEL, "messages": ASK, "temperature": 0, "max_tokens": 24, **kwargs}
    return client.chat.completions.create(**args)


def test_models_lists_the_default_model(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list().data]
    assert ids == ["smollm2-135m:q4_1"]
    assert client.models.retrieve("smollm2-135m").id == "smollm2-135m:q4_1"


def test_chat_completion_answers_with_consistent_usage(client: openai.OpenAI) -> None:
    reply = _greedy(client)
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and len(choice.message.content or "") > 5
    assert choice.finish_reason in ("stop", "length")
    usage = reply.usage
    assert usage is not None and 0 < usage.completion_tokens <= 24 and usage.prompt_tokens > 10
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert reply.model == "smollm2-135m:q4_1" and reply.id.startswith("chatcmpl-")


def test_streaming_gives_the_same_text_as_a_plain_request(client: openai.OpenAI) -> None:
    plain = _greedy(client).choices[0].message.content
    stream = client.chat.completions.create(
        model=MODEL,
        messages=ASK,
        temperature=0,
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finishes, usages = [], [], []
    for chunk in stream:
        if chunk.usage:
            usages.append(chunk.usage)
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finishes.append(choice.finish_reason)
    assert "".join(pieces) == plain
    assert len([p for p in pieces if p]) > 3  # it really streamed, piece by piece
    assert finishes[-1] in ("stop", "length") and all(f is None for f in finishes[:-1])
    assert len(usages) == 1 and usages[0].completion_tokens > 0


def test_max_tokens_ends_with_length(client: openai.OpenAI) -> None:
    reply = _greedy(client, max_tokens=3)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 3


def test_stop_sequence_cuts_the_answer_before_it(client: openai.OpenAI) -> None:
    full = _greedy(client).choices[0].message.content or ""
    words = full.split()
    assert len(words) > 3
    stop = words[2]
    cut = _greedy(client, stop=[stop]).choices[0]
    assert cut.message.content == full[: full.index(stop)]
    assert cut.finish_reason == "stop"


def test_a_seed_makes_sampling_repeatable(client: openai.OpenAI) -> None:
    def sample(seed: int) -> str:
        reply = _greedy(client, temperature=1.2, seed=seed, max_tokens=20)
        return reply.choices[0].message.content or ""

    assert sample(7) == sample(7)
    assert len({sample(s) for s in (1, 2, 3)}) > 1


def test_the_next_chat_turn_reuses_the_cached_prefix(client: openai.OpenAI) -> None:
    first = _greedy(client)
    history = [*ASK, {"role": "assistant", "content": first.choices[0].message.content}]
    second = _greedy(client, messages=[*history, {"role": "user", "content": "One more?"}])
    assert first.usage is not None and second.usage is not None
    details = second.usage.prompt_tokens_details
    assert details is not None and details.cached_tokens >= first.usage.prompt_tokens - 1


def test_text_completion(client: openai.OpenAI) -> None:
    reply = client.completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=6, temperature=0
    )
    assert reply.object == "text_completion" and reply.choices[0].text.strip()
    assert reply.usage is not None and reply.usage.completion_tokens <= 6


def _error(exc: openai.APIStatusError) -> dict:
    body = exc.body
    assert isinstance(body, dict)
    return body


def test_an_unknown_model_is_404_in_openai_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        _greedy(client, model="no-such-model")
    error = _error(caught.value)
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert set(error) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": MODEL, "messages": []}, "messages"),
        ({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        ({"model": MODEL, "messages": ASK, "temperature": 9}, "temperature"),
        ({"model": MODEL, "messages": ASK, "tools": [{"type": "function"}]}, "tools.0.function"),
        ({"model": MODEL, "messages": ASK, "n": 99}, "n"),
    ],
)
def test_invalid_requests_are_400_naming_the_field(base_url: str, body: dict, param: str) -> None:
    response = httpx.post(f"{base_url}/chat/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param


def test_malformed_json_is_400(base_url: str) -> None:
    response = httpx.post(
        f"{base_url}/chat/completions",
        content=b'{"model": "x", "messages": [',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]["message"]


def test_a_prompt_longer_than_the_context_is_refused(client: openai.OpenAI) -> None:
    long = [{"role": "user", "content": "word " * 5000}]
    with pytest.raises(openai.BadRequestError) as caught:
        _greedy(client, messages=long)
    error = _error(caught.value)
    assert error["code"] == "context_length_exceeded"
    assert "context" in error["message"]


def test_a_client_that_leaves_mid_stream_frees_the_server(
    base_url: str, client: openai.OpenAI
) -> None:
    body = {"model": MODEL, "messages": ASK, "max_tokens": 2000, "stream": True, "temperature": 0}
    with httpx.stream("POST", f"{base_url}/chat/completions", json=body) as response:
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data:"))
        assert json.loads(first.removeprefix("data:"))["object"] == "chat.completion.chunk"
    # The abandoned 2000-token answer must not hold the model: this one comes back quickly.
    reply = _greedy(client, max_tokens=4)
    assert reply.usage is not None and reply.usage.completion_tokens == 4


def test_the_server_keeps_serving_after_bad_requests(base_url: str, client: openai.OpenAI) -> None:
    for bad in (b"not json", b"[]", b'{"messages": "x"}'):
        httpx.post(f"{base_url}/chat/completions", content=bad)
    assert httpx.get(base_url.removesuffix("/v1") + "/health").json()["status"] == "ok"
    assert _greedy(client, max_tokens=2).choices[0].message.content

"""Request fields honoured on the real model: logit_bias, echo, prompt lists, token-id prompts and
embedding inputs, 64-bit seeds, and tool calls cut by the token limit (chat, stream, responses)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

pytestmark = pytest.mark.e2e

MODEL = "smollm2-135m"
TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "lookup",
        "parameters": {
            "type": "object",
            "properties": {"word": {"type": "string"}},
            "required": ["word"],
        },
    },
}


def _complete(client: openai.OpenAI, **kwargs: Any) -> openai.types.Completion:
    args: dict[str, Any] = {"model": MODEL, "max_tokens": 6, "temperature": 0, **kwargs}
    return client.completions.create(**args)


def test_logit_bias_forces_and_bans_tokens(client: openai.OpenAI, base_url: str) -> None:
    plain = _complete(client, prompt="The sky is").choices[0].text
    forced = _complete(client, prompt="The sky is", max_tokens=3, logit_bias={"1000": 100})
    text = forced.choices[0].text
    assert text and text != plain and text == text[: len(text) // 3] * 3  # one token, thrice
    banned = httpx.post(
        f"{base_url}/completions",
        json={"model": MODEL, "prompt": "x", "logit_bias": {"99999999": 1}},
    )
    assert banned.status_code == 400 and banned.json()["error"]["param"] == "logit_bias"


def test_echo_and_a_list_of_prompts_number_choices_as_openai(client: openai.OpenAI) -> None:
    prompts = ["The sky is", "Grass is"]
    alone = [_complete(client, prompt=p).choices[0].text for p in prompts]
    together = _complete(client, prompt=prompts, n=2)
    assert [c.index for c in together.choices] == [0, 1, 2, 3]
    assert [c.text for c in together.choices] == [alone[0], alone[0], alone[1], alone[1]]
    assert together.usage is not None and together.usage.completion_tokens == 4 * 6
    echoed = _complete(client, prompt=prompts[0], echo=True).choices[0].text
    assert echoed == prompts[0] + alone[0]
    streamed = client.completions.create(
        model=MODEL, prompt=prompts[0], echo=True, max_tokens=6, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == echoed


def test_token_id_prompts_and_embedding_inputs_are_used_as_given(client: openai.OpenAI) -> None:
    ids = [504, 3658, 314]
    reply = _complete(client, prompt=ids)
    assert reply.usage is not None and reply.usage.prompt_tokens == 3  # no BOS added
    assert _complete(client, prompt=[ids, ids]).choices[1].text == reply.choices[0].text
    vectors = client.embeddings.create(model=MODEL, input=[ids, [504]])
    assert vectors.usage.prompt_tokens == 4 and len(vectors.data) == 2
    assert vectors.data[0].embedding != vectors.data[1].embedding
    with pytest.raises(openai.BadRequestError, match="vocabulary"):
        _complete(client, prompt=[10**7])


def test_64_bit_seeds_are_distinct_and_repeatable(client: openai.OpenAI) -> None:
    def sample(seed: int) -> str:
        reply = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Tell me a story."}],
            temperature=1.5, seed=seed, max_tokens=16,
        )  # fmt: skip
        return reply.choices[0].message.content or ""

    assert sample(2**64 - 1) == sample(2**64 - 1) == sample(-1)  # one 64-bit value, two spellings
    assert len({sample(1), sample(1 + 2**32), sample(1 + 2**33)}) == 3  # truncation merged these
    with pytest.raises(openai.BadRequestError, match="seed"):
        sample(2**64)


def test_a_call_cut_by_the_token_limit_is_never_content(client: openai.OpenAI) -> None:
    ask = [{"role": "user", "content": "Look up the word 'cat'."}]
    request: dict[str, Any] = {
        "model": MODEL, "messages": ask, "tools": [TOOL], "tool_choice": "required",
        "max_tokens": 6, "temperature": 0,
    }  # fmt: skip
    choice = client.chat.completions.create(**request).choices[0]
    assert choice.finish_reason == "length"
    assert not choice.message.content and not choice.message.tool_calls
    chunks = [c.choices[0] for c in client.chat.completions.create(**request, stream=True)]
    assert not "".join(c.delta.content or "" for c in chunks)
    assert not [t for c in chunks for t in c.delta.tool_calls or []]
    assert chunks[-1].finish_reason == "length"
    response = client.responses.create(
        model=MODEL, input=ask[0]["content"], max_output_tokens=6, temperature=0,
        tools=[{"type": "function", **TOOL["function"]}], tool_choice="required",
    )  # fmt: skip
    assert response.status == "incomplete" and response.output_text == ""
    assert not [item for item in response.output if item.type == "function_call"]


def test_a_required_call_is_made_once(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Look up 'cat', then 'dog'."}],
        tools=[TOOL], tool_choice="required", max_tokens=120, temperature=0,
    )  # fmt: skip
    calls = reply.choices[0].message.tool_calls or []
    assert len(calls) == 1 and reply.choices[0].finish_reason == "tool_calls"
    assert set(json.loads(calls[0].function.arguments)) == {"word"}


def test_a_body_without_a_json_content_type_is_read_as_json(base_url: str) -> None:
    """No Content-Type, curl -d's form type and fetch's text type, as llama-server reads them."""
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}],
                       "max_tokens": 2}).encode()  # fmt: skip
    for forgot in ({}, {"content-type": "application/x-www-form-urlencoded"},
                   {"content-type": "text/plain;charset=UTF-8"}):  # fmt: skip
        url = f"{base_url}/chat/completions"
        answer = httpx.post(url, content=body, headers=forgot, timeout=60)
        assert answer.status_code == 200 and answer.json()["choices"], (forgot, answer.text)
    declared = httpx.post(
        f"{base_url}/chat/completions", content=body, headers={"content-type": "application/xml"}
    )
    assert declared.status_code == 400  # a body that names another type is taken at its word
    assert declared.json()["error"]["message"] == "the request body must be a JSON object"

"""/v1/embeddings, /v1/responses and /metrics on the real model, with the `openai` client."""

from __future__ import annotations

import base64
import json
import math
import re
import struct
from typing import Literal

import httpx
import openai
import pytest
from pydantic import BaseModel, Field

pytestmark = pytest.mark.e2e

MODEL = "smollm2-135m"


def _norm(vector: list[float]) -> float:
    return math.sqrt(sum(v * v for v in vector))


def test_embeddings_are_normalised_repeatable_and_distinct(client: openai.OpenAI) -> None:
    texts = ["The cat sat on the mat.", "Quarterly revenue grew by 4%.", "The cat sat on the mat."]
    reply = client.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    vectors = [d.embedding for d in reply.data]
    assert [d.index for d in reply.data] == [0, 1, 2] and reply.model == "smollm2-135m:q4_1"
    assert len({len(v) for v in vectors}) == 1 and len(vectors[0]) == 576  # the model's width
    assert all(abs(_norm(v) - 1) < 1e-3 for v in vectors)
    assert vectors[0] == pytest.approx(vectors[2], abs=1e-5) and vectors[0] != vectors[1]
    assert reply.usage.prompt_tokens > 10


def test_base64_and_float_encodings_carry_the_same_vector(
    base_url: str, client: openai.OpenAI
) -> None:
    plain = client.embeddings.create(model=MODEL, input="hello", encoding_format="float")
    raw = httpx.post(
        f"{base_url}/embeddings",
        json={"model": MODEL, "input": "hello", "encoding_format": "base64"},
    ).json()
    packed = base64.b64decode(raw["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(packed) // 4}f", packed)
    assert list(decoded) == pytest.approx(plain.data[0].embedding, abs=1e-6)
    default = client.embeddings.create(model=MODEL, input="hello")  # the client's own default
    assert default.data[0].embedding == pytest.approx(plain.data[0].embedding, abs=1e-6)


def test_dimensions_shortens_and_renormalises(client: openai.OpenAI) -> None:
    reply = client.embeddings.create(model=MODEL, input="hello", dimensions=32)
    assert len(reply.data[0].embedding) == 32 and abs(_norm(reply.data[0].embedding) - 1) < 1e-3
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        client.embeddings.create(model=MODEL, input="hello", dimensions=100_000)


class Answer(BaseModel):
    city: str = Field(max_length=20)
    sunny: bool
    mood: Literal["good", "bad"]


def test_responses_answer_with_text_and_usage(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=MODEL, instructions="Be brief.", input="Say hello.", max_output_tokens=8,
        temperature=0,
    )  # fmt: skip
    assert response.status in ("completed", "incomplete") and response.output_text
    assert response.output[0].type == "message"
    assert response.usage is not None and response.usage.output_tokens <= 8


def test_responses_stream_typed_events_that_add_up(client: openai.OpenAI) -> None:
    request = {"model": MODEL, "input": "Say hello.", "max_output_tokens": 8, "temperature": 0}
    events = list(client.responses.create(stream=True, **request))
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas and deltas == client.responses.create(**request).output_text


def test_responses_stream_helper_parses_a_pydantic_model(client: openai.OpenAI) -> None:
    with client.responses.stream(
        model=MODEL, input="Is it sunny in Rome?", text_format=Answer, temperature=1.0,
        max_output_tokens=60,
    ) as stream:  # fmt: skip
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert isinstance(final.output_parsed, Answer)


def test_responses_call_a_required_function_and_take_its_output(client: openai.OpenAI) -> None:
    tool = {
        "type": "function",
        "name": "lookup",
        "parameters": {
            "type": "object",
            "properties": {"word": {"type": "string", "maxLength": 12}},
            "required": ["word"],
            "additionalProperties": False,
        },
    }
    first = client.responses.create(
        model=MODEL, input="Look up 'cat'.", tools=[tool], tool_choice="required",
        parallel_tool_calls=False, temperature=0, max_output_tokens=40,
    )  # fmt: skip
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "lookup"
    assert set(json.loads(calls[0].arguments)) == {"word"}
    second = client.responses.create(
        model=MODEL, tools=[tool], tool_choice="none", temperature=0, max_output_tokens=8,
        input=[
            {"role": "user", "content": "Look up 'cat'."},
            {"type": "function_call", "call_id": calls[0].call_id, "name": "lookup",
             "arguments": calls[0].arguments},
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "a pet"},
        ],
    )  # fmt: skip
    assert second.output_text and not [i for i in second.output if i.type == "function_call"]


@pytest.mark.parametrize(
    ("extra", "param"),
    [({"store": True}, "store"), ({"previous_response_id": "resp_1"}, "previous_response_id")],
)
def test_responses_keep_no_state_and_say_so(client: openai.OpenAI, extra: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input="hi", **extra)
    body = caught.value.body
    assert isinstance(body, dict) and body["param"] == param and "whole" in body["message"]


_SAMPLE = re.compile(r"^(llmedge_[a-z_]+)(\{[^}]*\})? (\S+)$")


def test_metrics_count_requests_and_tokens_in_prometheus_text(
    base_url: str, client: openai.OpenAI
) -> None:
    client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    response = httpx.get(base_url.removesuffix("/v1") + "/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, float] = {}
    for line in response.text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) llmedge_", line)
            continue
        match = _SAMPLE.match(line)
        assert match, line
        samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    key = 'llmedge_requests_total{method="POST",route="/v1/chat/completions",status="200"}'
    assert samples[key] >= 1
    assert samples["llmedge_generated_tokens_total"] >= 2
    assert samples["llmedge_models_loaded"] == 1 and samples["llmedge_slots"] >= 1
    assert samples["llmedge_resident_memory_bytes"] > 50e6
    assert samples["llmedge_requests_in_flight"] == 0

    def engine(name: str) -> float:  # summed over the loaded models
        return sum(v for k, v in samples.items() if k.startswith(f"llmedge_engine_{name}{{"))

    # The prompt's tokens and two answer tokens, in at least two steps; a whole step holds its
    # decode, and the time it spends besides (sampling, handing out) is what the engine adds.
    assert engine("decode_rows_total") >= engine("decode_steps_total") + 1 >= 3
    assert engine("step_seconds_total") > engine("decode_seconds_total") > 0

"""Validation errors say what is wrong in the client's terms, never in pydantic's."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from server.anthropic_schemas import MessagesRequest
from server.ollama_schemas import ChatRequest, parse_options
from server.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from server.validation import validation_message

HI = [{"role": "user", "content": "hi"}]


def _message(model: type[BaseModel], body: Any) -> tuple[str, str | None]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(body)
    return validation_message([dict(e) for e in caught.value.errors()])


@pytest.mark.parametrize(
    ("model", "body", "message", "param"),
    [
        (ChatCompletionRequest, {"messages": HI, "stop": ["a"] * 5},
         "stop: at most 4 sequences", "stop"),
        (ChatCompletionRequest, {"messages": HI, "stop": 5},
         "stop: a string or a list of at most 4 strings", "stop"),
        (EmbeddingRequest, {"input": 5}, "input: a string, a list of strings, or token ids",
         "input"),
        (EmbeddingRequest, {"input": [1.5]}, "input: a string, a list of strings, or token ids",
         "input"),
        (EmbeddingRequest, {"input": ""}, "input: must not be empty", "input"),
        (ChatCompletionRequest, {"messages": [{"role": "user", "content": 5}]},
         "messages.0.content: a string or a list of content parts", "messages.0.content"),
        (ChatCompletionRequest, {"messages": HI, "tool_choice": "sometimes"},
         'tool_choice: "none", "auto", "required", or a named function', "tool_choice"),
        (ChatCompletionRequest, {"messages": HI, "temperature": 9},
         "temperature: at most 2", "temperature"),
        (ChatCompletionRequest, {"messages": []}, "messages: must not be empty", "messages"),
        (ChatCompletionRequest, {}, "messages is required", "messages"),
        (ChatCompletionRequest, [], "the request body must be a JSON object", None),
        (ChatCompletionRequest, {"messages": HI, "audio": {}},
         "audio: llmedge answers in text only; omit it", "audio"),
        (ChatCompletionRequest, {"messages": HI, "stream_options": {"include_usage": True}},
         "stream_options: only allowed when stream is true", "stream_options"),
        (ChatCompletionRequest, {"messages": HI, "seed": 2**64},
         "seed: at most 18446744073709551615", "seed"),
        (CompletionRequest, {"prompt": [[1, 2], ["a"]]},
         "prompt.1.0: should be a valid integer, unable to parse string as an integer",
         "prompt.1.0"),
        (MessagesRequest, {"max_tokens": 4, "messages": HI, "system": 3},
         "system: a string or a list of text blocks", "system"),
    ],
)  # fmt: skip
def test_messages_name_the_field_as_the_client_wrote_it(
    model: type[BaseModel], body: Any, message: str, param: str | None
) -> None:
    assert _message(model, body) == (message, param)


def test_no_message_shows_pydantic_internals() -> None:
    bodies: list[tuple[type[BaseModel], Any]] = [
        (ChatCompletionRequest, {"messages": [{"role": "user", "content": [{"type": "x"}]}]}),
        (ChatCompletionRequest, {"messages": HI, "stop": [1]}),
        (EmbeddingRequest, {"input": [[1], "a"]}),
        (ChatRequest, {"model": "m", "messages": [{"role": "user", "images": ["aGk="]}]}),
        (MessagesRequest, {"max_tokens": 1, "messages": [{"role": "user", "content": [{}]}]}),
    ]
    for model, body in bodies:
        message, _ = _message(model, body)
        for internal in ("constrained-", ".str", "function-after", "list[", "Value error"):
            assert internal not in message, message


def test_an_image_part_is_refused_by_name() -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}
    message, param = _message(ChatCompletionRequest, body)
    assert param == "messages.0.content.0" and "'image_url' parts need a multimodal" in message


def test_ollama_options_are_named_under_options() -> None:
    from llmedge import InvalidRequestError

    with pytest.raises(InvalidRequestError) as unknown:
        parse_options({"wobble": 1})
    assert unknown.value.param == "options.wobble" and "not an option" in str(unknown.value)
    with pytest.raises(InvalidRequestError) as off:
        parse_options({"typical_p": 0.5})
    assert off.value.param == "options.typical_p" and "only 1.0" in str(off.value)
    assert parse_options({"mirostat": 0, "typical_p": 1, "num_gpu": 99, "seed": None}).seed is None

"""The objects the OpenAI endpoints answer with: completions, stream chunks, usage, logprobs."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Sequence
from typing import Any

from llmedge import GenerationChunk, TokenLogprob, ToolCall
from server.chat_runner import ChoiceEvent, ChoiceResult, total_usage

# JSON has no -inf; OpenAI reports impossible tokens with this value.
LOGPROB_FLOOR = -9999.0


def _logprob(value: float) -> float:
    return value if math.isfinite(value) else LOGPROB_FLOOR


def chat_logprobs(items: Sequence[TokenLogprob]) -> dict[str, Any]:
    return {
        "content": [
            {
                "token": item.token,
                "logprob": _logprob(item.logprob),
                "bytes": list(item.bytes),
                "top_logprobs": [
                    {"token": t, "logprob": _logprob(lp), "bytes": list(t.encode())}
                    for t, lp in item.top
                ],
            }
            for item in items
        ],
        "refusal": None,
    }


def completion_logprobs(items: Sequence[TokenLogprob], offset: int = 0) -> dict[str, Any]:
    """The legacy completions shape: parallel lists, alternatives as {token: logprob}."""
    offsets = []
    for item in items:
        offsets.append(offset)
        offset += len(item.token)
    return {
        "tokens": [item.token for item in items],
        "token_logprobs": [_logprob(item.logprob) for item in items],
        "top_logprobs": [{t: _logprob(lp) for t, lp in item.top} for item in items],
        "text_offset": offsets,
    }


def tool_call_json(call: ToolCall, index: int | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }
    return data if index is None else {"index": index, **data}


def usage_json(prompt: int, completion: int, cached: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def timings_json(last: GenerationChunk) -> dict[str, Any]:
    """llama-server's `timings` extension: what the answer cost."""
    return {
        "prompt_n": last.prompt_tokens - last.cached_tokens,
        "cache_n": last.cached_tokens,
        "predicted_n": last.generated_tokens,
        "prompt_per_second": last.prompt_tokens_per_s,
        "predicted_per_second": last.tokens_per_s,
        "time_to_first_token_s": last.time_to_first_token_s,
        "draft_n": last.draft_tokens,
        "draft_n_accepted": last.accepted_draft_tokens,
    }


class _Shape:
    """What every object of one request shares: its id, creation time and model."""

    id_prefix = ""

    def __init__(self, model: str, logprobs: bool) -> None:
        self.model = model
        self.logprobs = logprobs
        self.id = self.id_prefix + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.echoed: dict[str, Any] = {}  # request fields the API echoes in every object

    def _envelope(self, object_: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": object_,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "llmedge",
            "choices": choices,
            **self.echoed,
        }

    def _with_usage(self, body: dict[str, Any], results: Sequence[ChoiceResult]) -> dict[str, Any]:
        body["usage"] = usage_json(*total_usage(results))
        if results and results[0].last is not None:
            body["timings"] = timings_json(results[0].last)
        return body


class ChatShape(_Shape):
    """chat.completion and chat.completion.chunk objects of one request."""

    id_prefix = "chatcmpl-"

    def __init__(self, model: str, logprobs: bool) -> None:
        super().__init__(model, logprobs)
        self._calls_sent: dict[int, int] = {}

    def completion(self, results: Sequence[ChoiceResult]) -> dict[str, Any]:
        choices = []
        for result in results:
            message: dict[str, Any] = {
                "role": "assistant",
                "content": result.content_or_none,
                "refusal": None,
            }
            if result.calls:
                message["tool_calls"] = [tool_call_json(c) for c in result.calls]
            choices.append(
                {
                    "index": result.index,
                    "message": message,
                    "finish_reason": result.finish,
                    "logprobs": chat_logprobs(result.logprobs) if self.logprobs else None,
                }
            )
        return self._with_usage(self._envelope("chat.completion", choices), results)

    def first_chunk(self, index: int) -> dict[str, Any]:
        delta = {"role": "assistant", "content": ""}
        choice = {"index": index, "delta": delta, "finish_reason": None, "logprobs": None}
        return self._envelope("chat.completion.chunk", [choice])

    def chunk(self, event: ChoiceEvent) -> dict[str, Any]:
        delta: dict[str, Any] = {}
        if event.content:
            delta["content"] = event.content
        if event.calls:
            sent = self._calls_sent.get(event.index, 0)
            delta["tool_calls"] = [
                tool_call_json(call, sent + k) for k, call in enumerate(event.calls)
            ]
            self._calls_sent[event.index] = sent + len(event.calls)
        choice = {
            "index": event.index,
            "delta": delta,
            "finish_reason": event.finish,
            "logprobs": chat_logprobs(event.logprobs) if self.logprobs and event.logprobs else None,
        }
        body = self._envelope("chat.completion.chunk", [choice])
        if event.last is not None:
            body["timings"] = timings_json(event.last)
        return body

    def usage_chunk(self, prompt: int, completion: int, cached: int) -> dict[str, Any]:
        return {
            **self._envelope("chat.completion.chunk", []),
            "usage": usage_json(prompt, completion, cached),
        }


class TextShape(_Shape):
    """text_completion objects of one request (also its stream chunks)."""

    id_prefix = "cmpl-"

    def __init__(self, model: str, logprobs: bool) -> None:
        super().__init__(model, logprobs)
        self._offsets: dict[int, int] = {}

    def completion(self, results: Sequence[ChoiceResult]) -> dict[str, Any]:
        choices = [
            {
                "index": r.index,
                "text": r.content,
                "finish_reason": r.finish,
                "logprobs": completion_logprobs(r.logprobs) if self.logprobs else None,
            }
            for r in results
        ]
        return self._with_usage(self._envelope("text_completion", choices), results)

    def chunk(self, event: ChoiceEvent) -> dict[str, Any]:
        offset = self._offsets.get(event.index, 0)
        logprobs = None
        if self.logprobs and event.logprobs:
            logprobs = completion_logprobs(event.logprobs, offset)
            self._offsets[event.index] = offset + sum(len(i.token) for i in event.logprobs)
        choice = {
            "index": event.index,
            "text": event.content,
            "finish_reason": event.finish,
            "logprobs": logprobs,
        }
        return self._envelope("text_completion", [choice])

    def usage_chunk(self, prompt: int, completion: int, cached: int) -> dict[str, Any]:
        usage = usage_json(prompt, completion, cached)
        return {**self._envelope("text_completion", []), "usage": usage}

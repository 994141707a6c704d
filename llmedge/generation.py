"""What goes into a generation and the one chunk type that comes out, shared by every frontend."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]
# How a generation finished. One that is cancelled or fails does not finish: its stream raises.
FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class ToolCall:
    """A function call the model asked for; `arguments` is JSON text, as OpenAI sends it."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None

    def template_view(self) -> dict[str, Any]:
        """The message as chat templates expect it (the Hugging Face message shape)."""
        view: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            view["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": _json_or_text(call.arguments)},
                }
                for call in self.tool_calls
            ]
        if self.tool_call_id:
            view["tool_call_id"] = self.tool_call_id
        if self.name:
            view["name"] = self.name
        return view


def _json_or_text(arguments: str) -> Any:
    # Templates index into arguments (`arguments.location`), so give them the parsed object.
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens and when to stop. Greedy when temperature is 0."""

    max_tokens: int | None = None
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None  # any 64-bit value; a backend maps it onto what its sampler takes
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias added to its logit)
    grammar: str | None = None  # GBNF; the answer is constrained to it
    logprobs: bool = False
    top_logprobs: int = 0  # alternatives reported per token, with logprobs
    speculative: bool = True  # may guess tokens ahead where the engine speculates (same answer)
    # The fields the request set, so a model's defaults fill only the others (None: not known;
    # then a field that differs from its default counts as set).
    given: frozenset[str] | None = None


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token's log-probability and its most likely alternatives."""

    token: str
    logprob: float
    bytes: tuple[int, ...]
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class GenerationChunk:
    """One step of a stream: new text and the running telemetry.

    The last chunk of a stream has `finish_reason` set; its counters are the totals.
    """

    text: str
    token_ids: tuple[int, ...] = ()
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    generated_tokens: int = 0
    cached_tokens: int = 0
    time_to_first_token_s: float | None = None
    tokens_per_s: float | None = None
    prompt_tokens_per_s: float | None = None
    peak_memory_bytes: int | None = None
    logprobs: tuple[TokenLogprob, ...] = ()
    stop_sequence: str | None = None  # on the last chunk: the stop string that ended it, if one
    draft_tokens: int = 0  # tokens guessed ahead (speculative decoding), so far
    accepted_draft_tokens: int = 0  # of those, the ones the model agreed with

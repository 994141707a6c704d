"""What goes into a generation and the one chunk type that comes out, shared by every frontend."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str


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
    seed: int | None = None


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

"""What the batch scheduler keeps per sequence: the slots of its llama.cpp context and the request
each one runs (its prompt, what it generated, its sampler, stop strings and draft state)."""

from __future__ import annotations

import codecs
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from llmedge.backends.base import GenerationSink
from llmedge.backends.llama.drafts import DraftLength, NgramDrafts
from llmedge.generation import FinishReason, GenerationChunk, TokenLogprob
from llmedge.prompting import StopMatcher


@dataclass(eq=False)
class Request:
    """One generation in a slot, from admission to its end."""

    job: GenerationSink
    max_tokens: int
    sampler: Any  # its llama.cpp sampler chain, freed when it ends
    pending: list[int] = field(default_factory=list)  # prompt tokens not yet in the cache
    generated: list[int] = field(default_factory=list)
    next_token: int = -1  # sampled, not yet decoded
    cached: int = 0  # prompt tokens the slot's cache already held
    started: float = field(default_factory=time.perf_counter)
    first_at: float | None = None
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )
    stops: StopMatcher = field(init=False)
    drafts: NgramDrafts | None = None  # the context's n-grams, when it drafts by lookup
    draft_length: DraftLength = field(default_factory=DraftLength)
    drafting: bool = False  # it proposes draft tokens (speculation is on for it)

    def __post_init__(self) -> None:
        self.stops = StopMatcher(self.job.params.stop)

    @property
    def prompt(self) -> tuple[int, ...]:
        return self.job.tokens

    def context(self) -> list[int]:
        """Every token the answer continues from: the prompt, then what was generated (its last
        token is `next_token`, sampled but not yet decoded)."""
        return [*self.prompt, *self.generated]

    def chunk(
        self,
        text: str,
        token_ids: tuple[int, ...] = (),
        finish: FinishReason | None = None,
        logprobs: tuple[TokenLogprob, ...] = (),
        peak_memory_bytes: int | None = None,
    ) -> GenerationChunk:
        now = time.perf_counter()
        ttft = (self.first_at - self.started) if self.first_at else None
        n = len(self.generated)
        decode_s = now - self.first_at if self.first_at else 0.0
        evaluated = len(self.prompt) - self.cached
        return GenerationChunk(
            text=text,
            token_ids=token_ids,
            finish_reason=finish,
            prompt_tokens=len(self.prompt),
            generated_tokens=n,
            cached_tokens=self.cached,
            time_to_first_token_s=ttft,
            tokens_per_s=(n - 1) / decode_s if n > 1 and decode_s > 0 else None,
            prompt_tokens_per_s=evaluated / ttft if ttft else None,
            peak_memory_bytes=peak_memory_bytes,
            logprobs=logprobs,
            draft_tokens=self.draft_length.drafted,
            accepted_draft_tokens=self.draft_length.accepted,
        )


@dataclass(eq=False)
class Slot:
    """One sequence of the context, and the tokens its KV cache holds."""

    seq_id: int
    kv_tokens: list[int] = field(default_factory=list)
    request: Request | None = None
    last_used: float = 0.0


# A cached prefix shorter than this (a chat template's first tokens) does not pick the slot.
REUSE_MIN_TOKENS = 32


def choose_slot(slots: Sequence[Slot], free: Sequence[Slot], prompt: Sequence[int]) -> Slot:
    """The free slot for a new prompt: the one whose cache holds most of it, when that saves
    evaluating a real part of it; else the one keeping the busy slots' ids closest together
    (llama.cpp attends over every sequence from the lowest id in a step to the highest, idle
    ones between included); then the least recently used, whose cache is the least likely to
    be asked for again."""
    busy = [slot.seq_id for slot in slots if slot.request is not None]

    def reuse(slot: Slot) -> int:
        kept = reusable(slot, prompt)
        return kept if kept >= REUSE_MIN_TOKENS else 0

    def span(slot: Slot) -> int:
        ids = [*busy, slot.seq_id]
        return max(ids) - min(ids)

    return max(free, key=lambda s: (reuse(s), -span(s), -s.last_used))


def reusable(slot: Slot, prompt: Sequence[int]) -> int:
    """The prompt tokens the slot's cache already holds and may keep: their common prefix, less
    the last prompt token, which must be evaluated to get logits."""
    return min(common_prefix(slot.kv_tokens, prompt), len(prompt) - 1)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class Rows:
    """The llama.cpp batch a step fills: one row per token, for some sequence, with or without
    logits (a row with logits is sampled from after the decode)."""

    def __init__(self, lib: Any, capacity: int) -> None:
        self._lib = lib
        self.batch = lib.llama_batch_init(capacity, 0, 1)

    def __len__(self) -> int:
        return int(self.batch.n_tokens)

    def clear(self) -> None:
        self.batch.n_tokens = 0

    def add(self, seq: int, token: int, pos: int, logits: bool) -> int:
        """Add a row; returns its index."""
        batch, i = self.batch, int(self.batch.n_tokens)
        batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, pos, 1
        batch.seq_id[i][0], batch.logits[i] = seq, logits
        batch.n_tokens = i + 1
        return i

    def free(self) -> None:
        self._lib.llama_batch_free(self.batch)

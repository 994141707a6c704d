"""Continuous batching over one llama.cpp context: several sequences decoded together.

Each slot owns a sequence id and remembers which tokens its KV cache holds. A new request takes
the free slot sharing the longest prefix with its prompt, so a multi-turn chat evaluates only the
new turn. Every step packs one decode: the next token of each generating slot plus as much pending
prompt as fits in `n_batch`; then each slot that got logits samples with its own sampler chain and
writes its chunk straight into the request's sink. The prompt cache is bounded by construction:
`n_slots` sequences of `ctx_tokens` each.

One thread decodes; `submit` may be called from any thread. A failure while sampling or decoding
one slot's token ends that request alone; the other slots go on.
"""

from __future__ import annotations

import codecs
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from llmedge.backends.base import GenerationSink
from llmedge.backends.llama_sampling import build_sampler, token_logprob
from llmedge.errors import DecodeError, GenerationCancelledError, ModelUnloadingError
from llmedge.generation import FinishReason, GenerationChunk, TokenLogprob
from llmedge.prompting import StopMatcher

log = logging.getLogger("llmedge.engine")


@dataclass(eq=False)
class _Request:
    job: GenerationSink
    max_tokens: int
    sampler: Any
    pending: list[int] = field(default_factory=list)
    generated: list[int] = field(default_factory=list)
    next_token: int = -1
    cached: int = 0
    started: float = field(default_factory=time.perf_counter)
    first_at: float | None = None
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )
    stops: StopMatcher = field(init=False)

    def __post_init__(self) -> None:
        self.stops = StopMatcher(self.job.params.stop)

    @property
    def prompt(self) -> tuple[int, ...]:
        return self.job.tokens

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
        )


@dataclass(eq=False)
class _Slot:
    seq_id: int
    kv_tokens: list[int] = field(default_factory=list)
    request: _Request | None = None
    last_used: float = 0.0


def common_prefix(a: list[int], b: tuple[int, ...]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class BatchScheduler:
    """Runs every generation of one llama.cpp context on a single decoding thread."""

    def __init__(
        self,
        lib: Any,
        ctx: Any,
        vocab: Any,
        n_slots: int,
        n_batch: int,
        piece: Callable[[int], bytes],
        peak_memory: Callable[[], int],
    ) -> None:
        self._lib = lib
        self._ctx = ctx
        self._vocab = vocab
        self._memory = lib.llama_get_memory(ctx)
        self._n_vocab = lib.llama_vocab_n_tokens(vocab)
        self._n_ctx_seq = int(lib.llama_n_ctx_seq(ctx))
        self._n_batch = n_batch
        self._piece = piece
        self._peak_memory = peak_memory
        self._batch = lib.llama_batch_init(n_batch, 0, 1)
        self._slots = [_Slot(i) for i in range(n_slots)]
        self._incoming: deque[_Request] = deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._idle = threading.Event()  # set while no request is running or waiting
        self.counters: dict[str, float] = {
            "decode_steps_total": 0,
            "decode_seconds_total": 0.0,
            "decode_step_seconds_max": 0.0,
            # The longest a cancelled request held its slot: at most one decode step.
            "cancel_free_seconds_max": 0.0,
        }
        self._thread = threading.Thread(target=self._run, name="llmedge-batch", daemon=True)
        self._thread.start()

    # --- called from request threads -----------------------------------------------------

    def submit(self, job: GenerationSink) -> None:
        """Queue `job`; its sampler (and grammar) is built here, so a bad one raises at once."""
        room = self._n_ctx_seq - len(job.tokens)
        max_tokens = min(job.params.max_tokens or room, room)
        sampler = build_sampler(self._lib, self._vocab, self._n_vocab, job.params)
        with self._wake:
            if self._stopping:
                self._lib.llama_sampler_free(sampler)
                raise ModelUnloadingError("the model is being unloaded; retry")
            self._incoming.append(_Request(job, max_tokens, sampler))
            self._idle.clear()
            self._wake.notify()

    def close(self) -> None:
        """Stop decoding; requests still running or waiting end with `ModelUnloadingError`."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join()
        self._lib.llama_batch_free(self._batch)

    def slot_tokens(self) -> list[list[int]]:
        """What each slot's cache holds (for tests and diagnostics)."""
        return [list(slot.kv_tokens) for slot in self._slots]

    def wait_idle(self, timeout_s: float | None = None) -> bool:
        """Wait until every slot is free and nothing waits; False if `timeout_s` passed first."""
        return self._idle.wait(timeout_s)

    # --- the decoding thread -------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and not self._incoming and not self._active():
                    self._idle.set()
                    self._wake.wait()
                if self._stopping:
                    break
                self._admit()
            try:
                self._step()
            except Exception as exc:  # a fault outside any one slot: never leave callers waiting
                log.exception("llama.cpp batch step failed")
                for slot in self._active():
                    self._fail(slot, DecodeError(f"the engine failed: {exc}"))
        unloaded = ModelUnloadingError("the model was unloaded; retry and it loads again")
        for slot in self._active():
            self._fail(slot, unloaded)
        while self._incoming:
            request = self._incoming.popleft()
            request.job.fail(unloaded)
            self._free(request)

    def _active(self) -> list[_Slot]:
        return [slot for slot in self._slots if slot.request is not None]

    def _admit(self) -> None:
        free = [slot for slot in self._slots if slot.request is None]
        while self._incoming and free:
            request = self._incoming.popleft()
            if request.job.cancelled:
                request.job.fail(GenerationCancelledError("cancelled before it started"))
                self._free(request)
                continue
            usable = len(request.prompt) - 1  # one token must be evaluated to get logits

            def reuse(slot: _Slot, usable: int = usable, request: _Request = request) -> int:
                return min(common_prefix(slot.kv_tokens, request.prompt), usable)

            slot = max(free, key=lambda s: (reuse(s), -s.last_used))
            free.remove(slot)
            keep = reuse(slot)
            if keep < len(slot.kv_tokens) and not self._lib.llama_memory_seq_rm(
                self._memory, slot.seq_id, keep, -1
            ):  # this cache cannot drop a tail (sliding window, recurrent): start over
                self._lib.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
                keep = 0
            del slot.kv_tokens[keep:]
            request.cached = keep
            request.pending = list(request.prompt[keep:])
            slot.request = request

    def _step(self) -> None:
        batch = self._batch
        batch.n_tokens = 0
        added: list[tuple[_Slot, int]] = []  # (slot, tokens added to the batch)
        sample_at: list[tuple[_Slot, int]] = []  # (slot, batch row with logits)

        def add(slot: _Slot, token: int, pos: int, logits: bool) -> None:
            i = batch.n_tokens
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = slot.seq_id
            batch.logits[i] = logits
            batch.n_tokens = i + 1
            if logits:
                sample_at.append((slot, i))

        for slot in self._active():
            request = slot.request
            assert request is not None
            if request.job.cancelled:  # the caller left: the slot is free from this step on
                self._fail(slot, GenerationCancelledError("the generation was cancelled"))
                held_s = time.monotonic() - (request.job.cancelled_at or time.monotonic())
                counters = self.counters
                counters["cancel_free_seconds_max"] = max(
                    counters["cancel_free_seconds_max"], held_s
                )
            elif not request.pending:
                add(slot, request.next_token, len(slot.kv_tokens), logits=True)
                added.append((slot, 1))
        for slot in self._active():
            request = slot.request
            assert request is not None
            room = self._n_batch - batch.n_tokens
            if not request.pending or room <= 0:
                continue
            take = request.pending[:room]
            start = len(slot.kv_tokens)
            completes = len(take) == len(request.pending)
            for j, token in enumerate(take):
                add(slot, token, start + j, logits=completes and j == len(take) - 1)
            added.append((slot, len(take)))
        if batch.n_tokens == 0:
            return

        decode_started = time.perf_counter()
        code = self._lib.llama_decode(self._ctx, batch)
        step_s = time.perf_counter() - decode_started
        counters = self.counters
        counters["decode_steps_total"] += 1
        counters["decode_seconds_total"] += step_s
        counters["decode_step_seconds_max"] = max(counters["decode_step_seconds_max"], step_s)
        if code != 0:
            error = DecodeError(f"llama.cpp could not decode the batch (code {code})")
            for slot, _ in added:
                if slot.request is not None:
                    self._lib.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
                    slot.kv_tokens.clear()
                    self._fail(slot, error)
            return
        for slot, n in added:
            request = slot.request
            assert request is not None
            if request.pending:
                slot.kv_tokens += request.pending[:n]
                del request.pending[:n]
            else:
                slot.kv_tokens.append(request.next_token)
        for slot, row in sample_at:
            try:
                self._sample(slot, row)
            except Exception as exc:  # this request alone fails; the others go on
                log.exception("sampling a token failed")
                if slot.request is not None:
                    self._fail(slot, DecodeError(f"sampling failed: {exc}"))

    def _sample(self, slot: _Slot, row: int) -> None:
        request = slot.request
        assert request is not None
        lib = self._lib
        token = lib.llama_sampler_sample(request.sampler, self._ctx, row)
        request.first_at = request.first_at or time.perf_counter()
        if lib.llama_vocab_is_eog(self._vocab, token):
            self._finish(slot, "stop")
            return
        logprobs: tuple[TokenLogprob, ...] = ()
        params = request.job.params
        if params.logprobs:
            logits = lib.llama_get_logits_ith(self._ctx, row)
            logprobs = (
                token_logprob(logits, self._n_vocab, token, params.top_logprobs, self._piece),
            )
        request.generated.append(token)
        text, stopped = request.stops.feed(request.decoder.decode(self._piece(token)))
        if text or logprobs:
            request.job.put(request.chunk(text, (token,), logprobs=logprobs))
        if stopped:
            self._finish(slot, "stop", hit_stop=True)
        elif len(request.generated) >= request.max_tokens:
            self._finish(slot, "length")
        else:
            request.next_token = token

    def _finish(self, slot: _Slot, reason: FinishReason, hit_stop: bool = False) -> None:
        request = slot.request
        assert request is not None
        # Text held back as a possible stop string, or half a UTF-8 character, belongs to the
        # answer unless a stop string really ended it.
        tail = "" if hit_stop else request.stops.flush() + request.decoder.decode(b"", final=True)
        peak = self._peak_memory()
        final = request.chunk(tail, finish=reason, peak_memory_bytes=peak)
        self._release(slot)
        request.job.put(replace(final, stop_sequence=request.stops.matched))

    def _fail(self, slot: _Slot, error: BaseException) -> None:
        request = slot.request
        assert request is not None
        self._release(slot)
        request.job.fail(error)

    def _release(self, slot: _Slot) -> None:
        assert slot.request is not None
        self._free(slot.request)
        slot.request = None
        slot.last_used = time.monotonic()

    def _free(self, request: _Request) -> None:
        if request.sampler is not None:
            self._lib.llama_sampler_free(request.sampler)
            request.sampler = None

"""Continuous batching over one llama.cpp context: several sequences decoded together, each
drafting ahead where it can.

Each slot owns a sequence id and remembers which tokens its KV cache holds. A new request takes
the free slot sharing the longest prefix with its prompt, so a multi-turn chat evaluates only the
new turn. Every step packs one decode: the next token of each generating slot, as much pending
prompt as fits in `n_batch`, and in the room left each slot's draft tokens (speculative decoding,
`llmedge.backends.llama.drafts`); then each slot samples its rows in order with its own sampler
chain, keeps the draft tokens its samples agree with, drops the rest from its cache, and writes
its chunks straight into the request's sink. The prompt cache is bounded by construction:
`n_slots` sequences of `ctx_tokens` each.

One thread decodes; `submit` may be called from any thread. A failure while sampling or decoding
one slot's token ends that request alone; the other slots go on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Literal

from llmedge.backends.base import GenerationSink
from llmedge.backends.llama.draft_model import DraftModel
from llmedge.backends.llama.draft_plan import DraftPlanner
from llmedge.backends.llama.drafts import NgramDrafts
from llmedge.backends.llama.sampling import build_sampler, token_logprob
from llmedge.backends.llama.slots import Request, Rows, Slot, choose_slot, reusable
from llmedge.errors import DecodeError, GenerationCancelledError, ModelUnloadingError
from llmedge.generation import FinishReason, TokenLogprob

log = logging.getLogger("llmedge.engine")

Speculation = Literal["off", "ngram", "draft"]
# Draft rows one step may add over all slots: a bound on how much longer a step gets.
DRAFT_ROWS_MAX = 64


@dataclass(eq=False)
class _Verify:
    """A generating slot's rows in this step: its next token, then its draft tokens."""

    slot: Slot
    row: int  # the next token's row; the draft tokens' follow it
    position: int  # the next token's position in the sequence
    draft: list[int]


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
        speculation: Speculation = "off",
        draft_model: DraftModel | None = None,
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
        self._speculation: Speculation = speculation
        self._draft_model = draft_model
        self._rows = Rows(lib, n_batch)
        self._planner = DraftPlanner(
            draft_model, self._n_ctx_seq, partial(lib.llama_vocab_is_eog, vocab)
        )
        self._slots = [Slot(i) for i in range(n_slots)]
        self._incoming: deque[Request] = deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._idle = threading.Event()  # set while no request is running or waiting
        self.counters: dict[str, float] = {
            "decode_steps_total": 0,
            "decode_rows_total": 0,
            "decode_seconds_total": 0.0,
            "step_seconds_total": 0.0,
            "decode_step_seconds_max": 0.0,
            # The longest a cancelled request held its slot: at most one decode step.
            "cancel_free_seconds_max": 0.0,
            "draft_tokens_total": 0,
            "draft_tokens_accepted_total": 0,
        }
        self._thread = threading.Thread(target=self._run, name="llmedge-batch", daemon=True)
        self._thread.start()

    # --- called from request threads -----------------------------------------------------

    def submit(self, job: GenerationSink) -> None:
        """Queue `job`; its sampler (and grammar) is built here, so a bad one raises at once."""
        room = self._n_ctx_seq - len(job.tokens)
        max_tokens = min(job.params.max_tokens or room, room)
        sampler = build_sampler(self._lib, self._vocab, self._n_vocab, job.params)
        request = Request(job, max_tokens, sampler)
        request.drafting = self._speculation != "off" and job.params.speculative
        with self._wake:
            if self._stopping:
                self._lib.llama_sampler_free(sampler)
                raise ModelUnloadingError("the model is being unloaded; retry")
            self._incoming.append(request)
            self._idle.clear()
            self._wake.notify()

    def close(self) -> None:
        """Stop decoding; requests still running or waiting end with `ModelUnloadingError`."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join()
        self._rows.free()
        if self._draft_model is not None:
            self._draft_model.close()

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
                started = time.perf_counter()
                rows = self._step()
                step_s = time.perf_counter() - started  # sampling and handing out included
                self.counters["step_seconds_total"] += step_s
                if rows:
                    self._planner.cost.record(rows, step_s)
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

    def _active(self) -> list[Slot]:
        return [slot for slot in self._slots if slot.request is not None]

    def _admit(self) -> None:
        free = [slot for slot in self._slots if slot.request is None]
        while self._incoming and free:
            request = self._incoming.popleft()
            if request.job.cancelled:
                request.job.fail(GenerationCancelledError("cancelled before it started"))
                self._free(request)
                continue
            slot = choose_slot(self._slots, free, request.prompt)
            free.remove(slot)
            keep = reusable(slot, request.prompt)
            if keep < len(slot.kv_tokens) and not self._lib.llama_memory_seq_rm(
                self._memory, slot.seq_id, keep, -1
            ):  # this cache cannot drop a tail (sliding window, recurrent): start over
                self._lib.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
                keep = 0
            del slot.kv_tokens[keep:]
            request.cached = keep
            request.pending = list(request.prompt[keep:])
            if request.drafting and self._speculation == "ngram":
                request.drafts = NgramDrafts(request.prompt)
            slot.request = request

    def _step(self) -> int:
        """One decode step and its sampling; the rows it decoded when all were generating
        (each sampled: what a draft row costs), else 0."""
        rows = self._rows
        rows.clear()
        prompts: list[tuple[Slot, int]] = []  # (slot, prompt tokens added to the batch)
        verify: list[_Verify] = []
        sample_at: list[tuple[Slot, int]] = []  # (slot, row) of prompts ending in this step
        generating: list[Slot] = []
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
                generating.append(slot)
        # Room: every generating slot's next token first, then pending prompts (a new request's
        # first token waits on them), then draft tokens in what is left.
        room = self._n_batch - len(generating)
        for slot in self._active():
            request = slot.request
            assert request is not None
            if not request.pending or room <= 0:
                continue
            take = request.pending[:room]
            room -= len(take)
            start = len(slot.kv_tokens)
            completes = len(take) == len(request.pending)
            for j, token in enumerate(take):
                row = rows.add(slot.seq_id, token, start + j, completes and j == len(take) - 1)
            if completes:
                sample_at.append((slot, row))
            prompts.append((slot, len(take)))
        drafts = self._planner.plan(
            generating, len(rows) + len(generating), min(room, DRAFT_ROWS_MAX)
        )
        for slot in generating:
            request = slot.request
            assert request is not None
            position = len(slot.kv_tokens)
            row = rows.add(slot.seq_id, request.next_token, position, logits=True)
            draft = drafts.get(slot.seq_id, [])
            for j, token in enumerate(draft):
                rows.add(slot.seq_id, token, position + 1 + j, logits=True)
            verify.append(_Verify(slot, row, position, draft))
        decoded = len(rows)
        if not decoded:
            return 0
        if not self._decode(rows.batch, [slot for slot, _ in prompts] + generating):
            return 0
        for slot, n in prompts:
            request = slot.request
            assert request is not None
            slot.kv_tokens += request.pending[:n]
            del request.pending[:n]
        for slot, row in sample_at:
            self._guarded(slot, partial(self._take, slot, row))
        for step in verify:
            self._guarded(step.slot, partial(self._verify, step))
        return 0 if prompts else decoded

    def _decode(self, batch: Any, slots: list[Slot]) -> bool:
        """Decode the batch; on a failure, fail the requests that were in it."""
        started = time.perf_counter()
        code = self._lib.llama_decode(self._ctx, batch)
        step_s = time.perf_counter() - started
        counters = self.counters
        counters["decode_steps_total"] += 1
        counters["decode_rows_total"] += batch.n_tokens
        counters["decode_seconds_total"] += step_s
        counters["decode_step_seconds_max"] = max(counters["decode_step_seconds_max"], step_s)
        if code == 0:
            return True
        error = DecodeError(f"llama.cpp could not decode the batch (code {code})")
        for slot in slots:
            if slot.request is not None:
                self._lib.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
                slot.kv_tokens.clear()
                self._fail(slot, error)
        return False

    def _guarded(self, slot: Slot, work: Callable[[], object]) -> None:
        try:
            work()
        except Exception as exc:  # this request alone fails; the others go on
            log.exception("sampling a token failed")
            if slot.request is not None:
                self._fail(slot, DecodeError(f"sampling failed: {exc}"))

    def _verify(self, step: _Verify) -> None:
        """Sample the slot's rows in order; keep the draft tokens its samples agree with."""
        slot, draft = step.slot, step.draft
        request = slot.request
        assert request is not None
        slot.kv_tokens.append(request.next_token)
        accepted = 0
        record, counters = request.draft_length, self.counters
        # Counted first, as they are kept: the answer's last chunk may be sent below.
        record.drafted += len(draft)
        counters["draft_tokens_total"] += len(draft)
        for i in range(len(draft) + 1):
            if not self._take(slot, step.row + i):
                break  # the answer ended
            if i == len(draft) or request.next_token != draft[i]:
                break  # a guess the model did not make: the rows after it are void
            accepted += 1
            record.accepted += 1
            counters["draft_tokens_accepted_total"] += 1
            slot.kv_tokens.append(draft[i])
        if draft:
            kept = step.position + 1 + accepted  # the next token and the accepted guesses
            if accepted < len(draft) and not self._lib.llama_memory_seq_rm(
                self._memory, slot.seq_id, kept, -1
            ):
                self._lib.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
                slot.kv_tokens.clear()
                request.drafting = False  # this cache cannot drop a tail: no more drafts
            record.adapt(len(draft), accepted)

    # --- tokens --------------------------------------------------------------------------

    def _take(self, slot: Slot, row: int) -> bool:
        """Sample the token at `row` and pass it on; False when it ended the answer."""
        request = slot.request
        assert request is not None
        lib = self._lib
        token = lib.llama_sampler_sample(request.sampler, self._ctx, row)
        request.first_at = request.first_at or time.perf_counter()
        if lib.llama_vocab_is_eog(self._vocab, token):
            self._finish(slot, "stop")
            return False
        logprobs: tuple[TokenLogprob, ...] = ()
        params = request.job.params
        if params.logprobs:
            logits = lib.llama_get_logits_ith(self._ctx, row)
            logprobs = (
                token_logprob(logits, self._n_vocab, token, params.top_logprobs, self._piece),
            )
        request.generated.append(token)
        if request.drafts is not None:
            request.drafts.extend((token,))
        text, stopped = request.stops.feed(request.decoder.decode(self._piece(token)))
        if text or logprobs:
            request.job.put(request.chunk(text, (token,), logprobs=logprobs))
        if stopped:
            self._finish(slot, "stop", hit_stop=True)
        elif len(request.generated) >= request.max_tokens:
            self._finish(slot, "length")
        else:
            request.next_token = token
            return True
        return False

    def _finish(self, slot: Slot, reason: FinishReason, hit_stop: bool = False) -> None:
        request = slot.request
        assert request is not None
        # Text held back as a possible stop string, or half a UTF-8 character, belongs to the
        # answer unless a stop string really ended it.
        tail = "" if hit_stop else request.stops.flush() + request.decoder.decode(b"", final=True)
        peak = self._peak_memory()
        final = request.chunk(tail, finish=reason, peak_memory_bytes=peak)
        self._release(slot)
        request.job.put(replace(final, stop_sequence=request.stops.matched))

    def _fail(self, slot: Slot, error: BaseException) -> None:
        request = slot.request
        assert request is not None
        self._release(slot)
        request.job.fail(error)

    def _release(self, slot: Slot) -> None:
        assert slot.request is not None
        self._free(slot.request)
        slot.request = None
        slot.last_used = time.monotonic()

    def _free(self, request: Request) -> None:
        if request.sampler is not None:
            self._lib.llama_sampler_free(request.sampler)
            request.sampler = None

"""MLX through mlx-lm: models converted to MLX (a folder, stored packed as one blob).

On Apple Silicon it runs on the GPU through Metal. On Linux it runs on the CPU when installed
as `mlx-lm[cpu]` (plain `mlx` installs there but its core does not import); llama.cpp is the
faster engine on a CPU, so the router picks MLX there only when asked or when the model exists
in no other format. One generation runs at a time.
"""

from __future__ import annotations

import importlib
import json
import math
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from llmedge.backends.base import Availability, GenerationSink, LoadOptions
from llmedge.backends.serial import SerialQueue, refuse_unservable
from llmedge.backends.templated import TemplatedChat
from llmedge.errors import BackendUnavailableError, ContextLengthExceededError, InvalidRequestError
from llmedge.extras import import_mlx
from llmedge.generation import (
    FinishReason,
    GenerationChunk,
    SamplingParams,
    TokenLogprob,
)
from llmedge.prompting import ChatTemplate, StopMatcher
from llmedge.store.folders import unpacked_dir

__all__ = ["MlxBackend", "MlxModel"]


class MlxBackend:
    """Runs MLX models with mlx-lm."""

    name = "mlx"
    formats = ("mlx",)

    def probe(self) -> Availability:
        try:
            mx, mlx_lm = import_mlx()
        except BackendUnavailableError as exc:
            return Availability(False, str(exc))
        device = "Metal GPU" if mx.default_device().type == mx.gpu else "CPU"
        return Availability(True, f"mlx-lm {mlx_lm.__version__} on the {device}")

    def load(self, path: Path, options: LoadOptions) -> MlxModel:
        return MlxModel(path, options)


class MlxModel(TemplatedChat):
    """An MLX model folder (or a packed blob of one) loaded with its tokenizer."""

    def __init__(self, path: Path, options: LoadOptions) -> None:
        self._mx, mlx_lm = import_mlx()
        folder = path if path.is_dir() else unpacked_dir(path)
        self._model, self._tokenizer = mlx_lm.load(str(folder))
        if self._mx.default_device().type == self._mx.cpu:
            # MLX's CPU kernels are many times slower in float16 than in float32 (35x for a
            # 4-bit matmul, measured), so scales and norms are widened; the weights stay 4-bit.
            self._model.set_dtype(self._mx.float32)
        # Evaluate now: a lazy array is tied to this thread's stream, and generation runs on
        # another thread ("There is no Stream(cpu, 0) in current thread").
        self._mx.eval(self._model.parameters())
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        trained = config.get("max_position_embeddings")
        self._ctx = (
            min(options.ctx_tokens, trained) if isinstance(trained, int) else options.ctx_tokens
        )
        tok = self._tokenizer
        self._bos = tok.bos_token or ""
        self._template = ChatTemplate(tok.chat_template, self._bos, tok.eos_token or "")
        self._lock = threading.Lock()
        sample_utils = importlib.import_module("mlx_lm.sample_utils")
        self._make_sampler = sample_utils.make_sampler
        self._make_processors = sample_utils.make_logits_processors
        self._stream_generate = importlib.import_module("mlx_lm.generate").stream_generate
        self._queue = SerialQueue(self._generate, "mlx")

    @property
    def ctx_tokens(self) -> int:
        return self._ctx

    @property
    def parallel(self) -> int:
        return 1

    def tokenize(self, text: str) -> list[int]:
        # A rendered chat template already starts with BOS; adding another would skew answers.
        special = not (self._bos and text.startswith(self._bos))
        return list(self._tokenizer.encode(text, add_special_tokens=special))

    def counters(self) -> Mapping[str, float]:
        return {}

    def submit(self, job: GenerationSink) -> None:
        refuse_unservable(job, self._ctx, "MLX")
        self._queue.submit(job)

    def _generate(
        self, prompt_tokens: Sequence[int], params: SamplingParams, cancel: threading.Event
    ) -> Iterator[GenerationChunk]:
        room = self._ctx - len(prompt_tokens)
        return self._stream(
            list(prompt_tokens), params, min(params.max_tokens or room, room), cancel
        )

    def _stream(
        self, prompt: list[int], params: SamplingParams, max_tokens: int, cancel: threading.Event
    ) -> Iterator[GenerationChunk]:
        mx = self._mx
        sampler = self._make_sampler(
            temp=params.temperature, top_p=params.top_p, min_p=params.min_p, top_k=params.top_k
        )
        processors = self._make_processors(
            repetition_penalty=params.repeat_penalty if params.repeat_penalty != 1.0 else None,
            presence_penalty=params.presence_penalty or None,
            frequency_penalty=params.frequency_penalty or None,
            logit_bias=dict(params.logit_bias) or None,
        )
        stops = StopMatcher(params.stop)
        started = time.perf_counter()
        first_at: float | None = None
        finish: FinishReason = "length"
        hit_stop = False
        last: Any = None
        with self._lock:
            if params.seed is not None:
                mx.random.seed(params.seed & 0xFFFFFFFFFFFFFFFF)  # it takes unsigned 64 bits
            responses = self._stream_generate(
                self._model,
                self._tokenizer,
                mx.array(prompt),
                max_tokens=max_tokens,
                sampler=sampler,
                logits_processors=processors,
            )
            try:
                for last in responses:
                    first_at = first_at or time.perf_counter()
                    if cancel.is_set():
                        return
                    eos = last.finish_reason == "stop"
                    wanted = params.logprobs and not eos
                    logprobs = (self._logprob(last, params.top_logprobs),) if wanted else ()
                    text, hit_stop = stops.feed(last.text)
                    if text or logprobs:
                        ids = () if eos else (int(last.token),)
                        yield self._chunk(last, text, ids, logprobs, started, first_at)
                    if hit_stop or last.finish_reason is not None:
                        finish = "stop" if hit_stop or eos else "length"
                        break
            finally:
                responses.close()
        # Text held back as a possible stop string belongs to the answer unless one ended it.
        tail = stops.flush() if not hit_stop else ""
        yield self._chunk(last, tail, (), (), started, first_at, finish)

    def _chunk(
        self,
        response: Any,
        text: str,
        token_ids: tuple[int, ...],
        logprobs: tuple[TokenLogprob, ...],
        started: float,
        first_at: float | None,
        finish: FinishReason | None = None,
    ) -> GenerationChunk:
        if response is None:  # cancelled before the first token
            return GenerationChunk(text, finish_reason=finish)
        generated = response.generation_tokens - (response.finish_reason == "stop")
        return GenerationChunk(
            text=text,
            token_ids=token_ids,
            finish_reason=finish,
            prompt_tokens=response.prompt_tokens,
            generated_tokens=generated,
            time_to_first_token_s=first_at - started if first_at else None,
            tokens_per_s=response.generation_tps or None,
            prompt_tokens_per_s=response.prompt_tps or None,
            peak_memory_bytes=int(response.peak_memory * 1e9) or None,
            logprobs=logprobs,
        )

    def _logprob(self, response: Any, top: int) -> TokenLogprob:
        values = response.logprobs
        token = int(response.token)
        piece = self._tokenizer.decode([token])
        alternatives: tuple[tuple[str, float], ...] = ()
        if top > 0:
            best = self._mx.argsort(-values)[:top].tolist()
            alternatives = tuple((self._tokenizer.decode([i]), values[i].item()) for i in best)
        return TokenLogprob(piece, values[token].item(), tuple(piece.encode()), alternatives)

    def embed(self, texts: Sequence[str | Sequence[int]]) -> tuple[list[list[float]], int]:
        """Mean-pooled, L2-normalised final hidden states."""
        inner = getattr(self._model, "model", None)
        if inner is None:
            raise InvalidRequestError("this MLX model does not expose its hidden states")
        vectors, total = [], 0
        with self._lock:
            for text in texts:
                tokens = self.tokenize(text) if isinstance(text, str) else list(text)
                if len(tokens) > self._ctx:
                    raise ContextLengthExceededError(len(tokens), self._ctx)
                total += len(tokens)
                hidden = inner(self._mx.array([tokens]))[0].astype(self._mx.float32)
                vector = [float(v) for v in hidden.mean(axis=0).tolist()]
                norm = math.sqrt(sum(v * v for v in vector)) or 1.0
                vectors.append([v / norm for v in vector])
        return vectors, total

    def close(self) -> None:
        self._queue.close()
        with self._lock:
            self._model = None
            self._mx.clear_cache()

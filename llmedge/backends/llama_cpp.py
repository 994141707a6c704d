"""llama.cpp through llama-cpp-python: GGUF models on CPU, Metal, CUDA or Vulkan builds."""

from __future__ import annotations

import codecs
import resource
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from llmedge.backends.base import Availability, LoadOptions
from llmedge.chat_template import ChatTemplate
from llmedge.errors import BackendUnavailableError, InvalidModelFileError
from llmedge.generation import ChatMessage, FinishReason, GenerationChunk, SamplingParams
from llmedge.stop_matcher import StopMatcher

INSTALL_HINT = "install it with `pip install 'llmedge[llama]'`"


def peak_rss_bytes() -> int:
    """The process's peak resident memory so far."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise BackendUnavailableError(f"llama-cpp-python is not installed; {INSTALL_HINT}") from exc
    return llama_cpp


class LlamaCppBackend:
    """Runs GGUF files with llama.cpp."""

    name = "llama.cpp"
    formats = ("gguf",)

    def probe(self) -> Availability:
        try:
            llama_cpp = _import_llama_cpp()
        except BackendUnavailableError as exc:
            return Availability(False, str(exc))
        offload = "GPU offload" if llama_cpp.llama_supports_gpu_offload() else "CPU only"
        return Availability(True, f"llama-cpp-python {llama_cpp.__version__} ({offload})")

    def load(self, path: Path, options: LoadOptions) -> LlamaCppModel:
        return LlamaCppModel(path, options)


class LlamaCppModel:
    """One GGUF model loaded in a llama.cpp context."""

    def __init__(self, path: Path, options: LoadOptions) -> None:
        llama_cpp = _import_llama_cpp()
        self._lib = llama_cpp
        try:
            self._llama: Any = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=options.ctx_tokens,
                n_threads=options.threads,
                n_threads_batch=options.threads,
                n_gpu_layers=options.gpu_layers,
                verbose=False,
            )
        except ValueError as exc:  # llama-cpp-python's only signal that the file did not load
            raise InvalidModelFileError(str(path), str(exc)) from exc
        vocab = self._llama._model.vocab
        self._vocab = vocab
        self._bos = self._llama.token_bos()
        self._add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
        self._template = ChatTemplate(
            self._llama.metadata.get("tokenizer.chat_template"),
            bos_token=self._token_text(self._bos),
            eos_token=self._token_text(self._llama.token_eos()),
        )

    @property
    def ctx_tokens(self) -> int:
        return int(self._llama.n_ctx())

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        text: bytes = self._llama.detokenize([token], special=True)
        return text.decode("utf-8", errors="replace")

    def tokenize(self, text: str) -> list[int]:
        tokens: list[int] = self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        if self._add_bos and self._bos >= 0 and (not tokens or tokens[0] != self._bos):
            tokens.insert(0, self._bos)
        return tokens

    def render_chat(self, messages: Sequence[ChatMessage]) -> str:
        return self._template.render(messages)

    def _cached_prefix(self, tokens: Sequence[int]) -> int:
        """How many prompt tokens the context already holds (llama-cpp-python reuses them)."""
        held = self._llama._input_ids
        n = 0
        for a, b in zip(held, tokens, strict=False):
            if a != b:
                break
            n += 1
        return min(n, len(tokens) - 1)

    def generate(
        self, prompt_tokens: Sequence[int], params: SamplingParams, cancel: threading.Event
    ) -> Iterator[GenerationChunk]:
        llama = self._llama
        llama.set_seed(
            self._lib.LLAMA_DEFAULT_SEED if params.seed is None else params.seed & 0xFFFFFFFF
        )
        max_tokens = params.max_tokens or (self.ctx_tokens - len(prompt_tokens))
        cached = self._cached_prefix(prompt_tokens)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = StopMatcher(params.stop)
        started = time.perf_counter()
        first_at: float | None = None
        generated: list[int] = []
        finish: FinishReason = "length"
        hit_stop = False

        def chunk(
            text: str, token_ids: tuple[int, ...], finish_reason: FinishReason | None = None
        ) -> GenerationChunk:
            now = time.perf_counter()
            ttft = (first_at or now) - started
            decode_s = now - (first_at or now)
            n = len(generated)
            return GenerationChunk(
                text=text,
                token_ids=token_ids,
                finish_reason=finish_reason,
                prompt_tokens=len(prompt_tokens),
                generated_tokens=n,
                cached_tokens=cached,
                time_to_first_token_s=ttft if first_at else None,
                tokens_per_s=(n - 1) / decode_s if n > 1 and decode_s > 0 else None,
                prompt_tokens_per_s=(len(prompt_tokens) - cached) / ttft if ttft > 0 else None,
                peak_memory_bytes=peak_rss_bytes() if finish_reason else None,
            )

        tokens = llama.generate(
            prompt_tokens,
            top_k=params.top_k,
            top_p=params.top_p,
            min_p=params.min_p,
            temp=params.temperature,
            repeat_penalty=params.repeat_penalty,
            frequency_penalty=params.frequency_penalty,
            presence_penalty=params.presence_penalty,
        )
        try:
            for token in tokens:
                if first_at is None:
                    first_at = time.perf_counter()
                if cancel.is_set():
                    finish = "cancelled"
                    break
                if self._lib.llama_vocab_is_eog(self._vocab, token):
                    finish = "stop"
                    break
                generated.append(token)
                text, stopped = stops.feed(decoder.decode(llama.detokenize([token])))
                if text:
                    yield chunk(text, (token,))
                if stopped:
                    finish, hit_stop = "stop", True
                    break
                if len(generated) >= max_tokens:
                    break
        finally:
            tokens.close()
        # Text held back as a possible stop string, or as half a UTF-8 character, belongs to the
        # answer unless a stop string really ended it.
        tail = "" if hit_stop else stops.flush() + decoder.decode(b"", final=True)
        yield chunk(tail, (), finish)

    def close(self) -> None:
        self._llama.close()

"""llama.cpp through llama-cpp-python's low-level bindings: GGUF models, continuously batched."""

from __future__ import annotations

import ctypes
import logging
import math
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llmedge.backends.base import Availability, GenerationSink, LoadOptions, close_at_exit
from llmedge.backends.llama.draft_model import DraftModel
from llmedge.backends.llama.preflight import preflight
from llmedge.backends.llama.scheduler import BatchScheduler
from llmedge.backends.llama.tokens import SpecialTokenSplitter
from llmedge.backends.templated import TemplatedChat
from llmedge.errors import (
    BackendUnavailableError,
    ContextLengthExceededError,
    DecodeError,
    InvalidModelFileError,
    LlmedgeError,
)
from llmedge.hardware import peak_rss_bytes
from llmedge.prompting import ChatTemplate

INSTALL_HINT = "install it with `pip install 'llmedge[llama]'`"
N_BATCH = 512
FLASH_ATTN_TYPES = {
    "auto": "LLAMA_FLASH_ATTN_TYPE_AUTO",
    "on": "LLAMA_FLASH_ATTN_TYPE_ENABLED",
    "off": "LLAMA_FLASH_ATTN_TYPE_DISABLED",
}


def _import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise BackendUnavailableError(f"llama-cpp-python is not installed; {INSTALL_HINT}") from exc
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # llama.cpp's own chatter
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
        version = _import_llama_cpp().__version__
        preflight(path, options, version)  # aborts happen in a child
        if options.speculative == "draft" and options.draft_path is not None:
            preflight(options.draft_path, options, version)
        return LlamaCppModel(path, options)


class LlamaCppModel(TemplatedChat):
    """A GGUF model with one context of `parallel` sequences of `ctx_tokens` each."""

    def __init__(self, path: Path, options: LoadOptions) -> None:
        lib = self._lib = _import_llama_cpp()
        model_params = lib.llama_model_default_params()
        model_params.n_gpu_layers = options.gpu_layers
        model_params.load_mode = lib.LLAMA_LOAD_MODE_NONE  # read, never mapped: a file cut
        model_params.lazy_mode = lib.LLAMA_LAZY_MODE_OFF  # while loaded cannot SIGBUS us
        self._model = lib.llama_model_load_from_file(str(path).encode(), model_params)
        if not self._model:
            raise InvalidModelFileError(str(path), "llama.cpp could not load it")
        self._vocab = lib.llama_model_get_vocab(self._model)
        self._splitter = SpecialTokenSplitter(lib, self._vocab)  # linear in the prompt's length
        self._pieces: dict[int, bytes] = {}
        self._parallel = options.parallel
        self._ctx = self._new_context(options.ctx_tokens * options.parallel, options)
        self._ctx_tokens = int(lib.llama_n_ctx_seq(self._ctx))
        self._options = options
        self._embed_ctx: Any = None
        self._embed_lock = threading.Lock()
        self._bos = lib.llama_vocab_bos(self._vocab)
        self._add_bos = bool(lib.llama_vocab_get_add_bos(self._vocab))
        template = lib.llama_model_chat_template(self._model, None)
        self._template = ChatTemplate(
            template.decode("utf-8", "replace") if template else None,
            bos_token=self._special_text(self._bos),
            eos_token=self._special_text(lib.llama_vocab_eos(self._vocab)),
        )
        try:
            self._scheduler = self._new_scheduler(options)
        except BaseException:
            lib.llama_free(self._ctx)
            lib.llama_model_free(self._model)
            raise
        self._closed = False
        close_at_exit(self)

    def _new_scheduler(self, options: LoadOptions) -> BatchScheduler:
        lib, speculation = self._lib, options.speculative
        draft = None
        if lib.llama_model_is_recurrent(self._model):
            speculation = "off"  # its state cannot drop a rejected guess
        elif speculation == "draft" and options.draft_path is not None:
            draft = DraftModel(lib, options.draft_path, options, self._vocab)
        elif speculation not in ("ngram", "off"):
            speculation = "off"
        return BatchScheduler(
            lib,
            self._ctx,
            self._vocab,
            options.parallel,
            N_BATCH,
            self.piece,
            peak_rss_bytes,
            speculation="draft" if draft else "ngram" if speculation == "ngram" else "off",
            draft_model=draft,
        )

    def _new_context(self, n_ctx: int, options: LoadOptions, embeddings: bool = False) -> Any:
        lib = self._lib
        params = lib.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = params.n_ubatch = n_ctx if embeddings else N_BATCH
        params.n_seq_max = 1 if embeddings else options.parallel
        params.kv_unified = False  # each sequence gets its own n_ctx / n_seq_max cache
        params.n_threads = params.n_threads_batch = options.threads
        params.type_k = getattr(lib, f"GGML_TYPE_{options.kv_type_k.upper()}")
        params.type_v = getattr(lib, f"GGML_TYPE_{options.kv_type_v.upper()}")
        params.flash_attn_type = getattr(lib, FLASH_ATTN_TYPES[options.flash_attn])
        if embeddings:
            params.embeddings = True
            params.pooling_type = lib.LLAMA_POOLING_TYPE_MEAN
        ctx = lib.llama_init_from_model(self._model, params)
        if not ctx:
            raise LlmedgeError(
                f"llama.cpp could not create a {n_ctx}-token context (out of memory?); "
                "try a smaller --ctx or --parallel"
            )
        return ctx

    @property
    def ctx_tokens(self) -> int:
        return self._ctx_tokens

    @property
    def parallel(self) -> int:
        return self._parallel

    def piece(self, token: int) -> bytes:
        """The bytes a token stands for (special tokens render as nothing)."""
        found = self._pieces.get(token)
        if found is None:
            found = self._pieces[token] = self._to_piece(token, special=False)
        return found

    def _to_piece(self, token: int, special: bool) -> bytes:
        buffer = ctypes.create_string_buffer(64)
        n = self._lib.llama_token_to_piece(self._vocab, token, buffer, 64, 0, special)
        if n < 0:
            buffer = ctypes.create_string_buffer(-n)
            n = self._lib.llama_token_to_piece(self._vocab, token, buffer, -n, 0, special)
        return buffer.raw[:n]

    def _special_text(self, token: int) -> str:
        return self._to_piece(token, special=True).decode("utf-8", "replace") if token >= 0 else ""

    def tokenize(self, text: str) -> list[int]:
        result = self._splitter.tokenize(text)
        if self._add_bos and self._bos >= 0 and (not result or result[0] != self._bos):
            result.insert(0, self._bos)
        return result

    def submit(self, job: GenerationSink) -> None:
        self._scheduler.submit(job)

    def counters(self) -> Mapping[str, float]:
        return dict(self._scheduler.counters)

    def embed(self, texts: Sequence[str | Sequence[int]]) -> tuple[list[list[float]], int]:
        """Mean-pooled, L2-normalised embeddings, one text at a time on a separate context."""
        lib = self._lib
        with self._embed_lock:
            if self._embed_ctx is None:
                self._embed_ctx = self._new_context(self._ctx_tokens, self._options, True)
            ctx, memory = self._embed_ctx, lib.llama_get_memory(self._embed_ctx)
            n_embd = lib.llama_model_n_embd(self._model)
            vectors, total = [], 0
            for text in texts:
                tokens = self.tokenize(text) if isinstance(text, str) else list(text)
                if len(tokens) > self._ctx_tokens:
                    raise ContextLengthExceededError(len(tokens), self._ctx_tokens, param="input")
                total += len(tokens)
                lib.llama_memory_clear(memory, True)
                batch = lib.llama_batch_init(len(tokens), 0, 1)
                try:
                    for i, token in enumerate(tokens):
                        batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, i, 1
                        batch.seq_id[i][0], batch.logits[i] = 0, True
                    batch.n_tokens = len(tokens)
                    if lib.llama_decode(ctx, batch) != 0:
                        raise DecodeError("llama.cpp could not compute the embedding")
                finally:
                    lib.llama_batch_free(batch)
                raw = lib.llama_get_embeddings_seq(ctx, 0)
                vector = [float(raw[i]) for i in range(n_embd)]
                norm = math.sqrt(sum(v * v for v in vector)) or 1.0
                vectors.append([v / norm for v in vector])
            return vectors, total

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._scheduler.close()
        for ctx in (self._embed_ctx, self._ctx):
            if ctx:
                self._lib.llama_free(ctx)
        self._lib.llama_model_free(self._model)

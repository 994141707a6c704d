"""Perplexity of a GGUF model on a text, through llama.cpp on the CPU (see `perplexity`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from llmedge.errors import QuantizationError
from llmedge.gguf import facts_from_header, read_gguf_header
from quantizers.perplexity import (
    DEFAULT_CTX_TOKENS,
    DEFAULT_SCORED_TOKENS,
    Perplexity,
    measure_windows,
    windows,
)


def perplexity(
    path: Path,
    text: str,
    *,
    threads: int,
    ctx_tokens: int = DEFAULT_CTX_TOKENS,
    scored_tokens: int = DEFAULT_SCORED_TOKENS,
    on_window: Callable[[int], None] | None = None,
) -> Perplexity:
    """Load `path` in llama.cpp (CPU) and measure its perplexity on `text`."""
    import llama_cpp
    import numpy as np

    trained = facts_from_header(read_gguf_header(path)).ctx_train_tokens
    ctx_tokens = min(ctx_tokens, trained or ctx_tokens)
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    try:
        model = llama_cpp.Llama(
            str(path),
            n_ctx=ctx_tokens,
            n_batch=ctx_tokens,
            n_threads=threads,
            n_gpu_layers=0,
            logits_all=True,
            verbose=False,
        )
    except ValueError as exc:
        raise QuantizationError(f"llama.cpp could not load {path}: {exc}") from exc

    def log_probs(window: list[int], first: int) -> list[float]:
        model.reset()  # type: ignore[no-untyped-call]
        model.eval(window)
        # Logits at position i predict token i + 1: rows first - 1 .. len - 2.
        logits = np.asarray(model.scores[: len(window) - 1], dtype=np.float64)[first - 1 :]
        top = logits.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]
        targets = np.asarray(window[first:])
        return [float(v) for v in logits[np.arange(len(targets)), targets] - log_norm]

    try:
        tokens = model.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        bos = model.tokenize(b"", add_bos=True)
        chunks = windows(tokens, bos[0] if bos else None, ctx_tokens, scored_tokens)
        return measure_windows(chunks, log_probs, on_window)
    finally:
        model.close()

"""Perplexity of a GGUF model on a text, the way llama.cpp's perplexity tool measures it.

The text is cut into chunks of `ctx_tokens`; each chunk starts with the model's BOS token (when it
uses one) and only its second half is scored, so every scored token sees at least half a window
of context. The result is exp(mean negative log-likelihood) over the scored tokens.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from llmedge.gguf_header import read_gguf_header
from llmedge.model_facts import facts_from_header
from llmedge.quant_types import QuantizationError

EVAL_TEXT_NAME = "perplexity.txt"
DEFAULT_CTX_TOKENS = 512
MAX_CHUNKS = 8


@dataclass(frozen=True)
class Perplexity:
    value: float
    tokens: int


def eval_text() -> str:
    """The English text shipped with llmedge for comparing quantizations."""
    return (resources.files("quantizers") / "data" / EVAL_TEXT_NAME).read_text(encoding="utf-8")


def perplexity(
    path: Path,
    text: str,
    *,
    threads: int,
    ctx_tokens: int = DEFAULT_CTX_TOKENS,
    max_chunks: int = MAX_CHUNKS,
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
    try:
        tokens = model.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        bos = model.tokenize(b"", add_bos=True)
        ctx = min(ctx_tokens, len(tokens))
        if ctx < 16:
            raise QuantizationError(f"the evaluation text is only {len(tokens)} tokens long")
        nll = 0.0
        scored = 0
        first = ctx // 2
        for start in range(0, min(len(tokens) // ctx, max_chunks) * ctx, ctx):
            chunk = tokens[start : start + ctx]
            if bos:
                chunk[0] = bos[0]
            model.reset()  # type: ignore[no-untyped-call]
            model.eval(chunk)
            logits = np.asarray(model.scores[: ctx - 1], dtype=np.float64)[first - 1 :]
            top = logits.max(axis=1, keepdims=True)
            log_norm = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]
            targets = np.asarray(chunk[first:])
            picked = logits[np.arange(len(targets)), targets]
            nll -= float((picked - log_norm).sum())
            scored += len(targets)
        return Perplexity(float(np.exp(nll / scored)), scored)
    finally:
        model.close()

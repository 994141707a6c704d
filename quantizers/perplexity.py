"""Perplexity, measured the way llama.cpp's perplexity tool does, whatever runs the model.

The text is cut into windows of `ctx_tokens`; each window starts with the model's BOS token (when
it uses one) and only its second half is scored, so every scored token sees at least half a
window of context. The result is exp(mean negative log-likelihood) over the scored tokens. GGUF
files (`gguf_perplexity`) and transformers models (`hf_perplexity`) share these windows, so
every quantization sits on one scale.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources

from llmedge.errors import QuantizationError

EVAL_TEXT_NAME = "perplexity.txt"
DEFAULT_CTX_TOKENS = 512
MAX_CHUNKS = 8
MIN_WINDOW_TOKENS = 16


@dataclass(frozen=True)
class Perplexity:
    value: float
    tokens: int


def eval_text() -> str:
    """The English text shipped with llmedge for comparing quantizations."""
    return (resources.files("quantizers") / "data" / EVAL_TEXT_NAME).read_text(encoding="utf-8")


def windows(
    tokens: Sequence[int], bos: int | None, ctx_tokens: int, max_chunks: int
) -> Iterator[list[int]]:
    """The windows to score: `ctx_tokens` long (or the whole text, if shorter), BOS first."""
    ctx = min(ctx_tokens, len(tokens))
    if ctx < MIN_WINDOW_TOKENS:
        raise QuantizationError(f"the evaluation text is only {len(tokens)} tokens long")
    for start in range(0, min(len(tokens) // ctx, max_chunks) * ctx, ctx):
        window = list(tokens[start : start + ctx])
        if bos is not None:
            window[0] = bos
        yield window


def measure_windows(
    windows: Iterator[list[int]], log_likelihood: Callable[[list[int], int], float]
) -> Perplexity:
    """Perplexity over `windows`; `log_likelihood(window, first)` sums the log-probabilities
    of the window's tokens from index `first` on, each given the tokens before it."""
    nll, scored = 0.0, 0
    for window in windows:
        first = len(window) // 2
        nll -= log_likelihood(window, first)
        scored += len(window) - first
    return Perplexity(math.exp(nll / scored), scored)

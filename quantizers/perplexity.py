"""Perplexity, measured the way llama.cpp's perplexity tool does, whatever runs the model.

The text is cut into windows of `ctx_tokens`; each window starts with the model's BOS token (when
it uses one) and only its second half is scored, so every scored token sees at least half a
window of context. Windows overlap by half, so each token of the text after the first half
window is scored exactly once, and `scored_tokens` of them need only that many tokens of text
(plus half a window). The result is exp(mean negative log-likelihood) over the scored tokens,
with one standard error (the delta method over the per-token values, as llama.cpp reports
it). GGUF files (`gguf_perplexity`) and transformers models (`hf_perplexity`) share these
windows, so every quantization sits on one scale.

8k scored tokens keep the ordering of neighbouring quantizations stable: on 512 the error is
about 4 %, more than the gap between, say, Q4_K_S and Q4_K_M.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources

from llmedge.errors import QuantizationError

EVAL_TEXT_NAME = "perplexity.txt"
DEFAULT_CTX_TOKENS = 512
DEFAULT_SCORED_TOKENS = 8192
MIN_WINDOW_TOKENS = 16


@dataclass(frozen=True)
class Perplexity:
    value: float
    tokens: int
    error: float = 0.0  # one standard error of `value`


def eval_text() -> str:
    """The English text shipped with llmedge for comparing quantizations."""
    return (resources.files("quantizers") / "data" / EVAL_TEXT_NAME).read_text(encoding="utf-8")


def windows(
    tokens: Sequence[int], bos: int | None, ctx_tokens: int, scored_tokens: int
) -> list[list[int]]:
    """The windows to score: `ctx_tokens` long (or the whole text, if shorter), BOS first,
    each starting half a window after the one before, enough to score `scored_tokens`."""
    ctx = min(ctx_tokens, len(tokens))
    if ctx < MIN_WINDOW_TOKENS:
        raise QuantizationError(f"the evaluation text is only {len(tokens)} tokens long")
    stride = ctx - ctx // 2  # the scored half
    available = (len(tokens) - ctx) // stride + 1
    wanted = max(1, math.ceil(scored_tokens / stride))
    if wanted > available:
        raise QuantizationError(
            f"the evaluation text has {len(tokens)} tokens, enough to score "
            f"{available * stride} with {ctx}-token windows; ask for at most that many "
            f"(--ppl-tokens {available * stride})"
        )
    found = []
    for start in range(0, wanted * stride, stride):
        window = list(tokens[start : start + ctx])
        if bos is not None:
            window[0] = bos
        found.append(window)
    return found


def measure_windows(
    windows: Sequence[list[int]],
    log_probs: Callable[[list[int], int], Sequence[float]],
    on_window: Callable[[int], None] | None = None,
) -> Perplexity:
    """Perplexity over `windows`; `log_probs(window, first)` gives the log-probability of each
    of the window's tokens from index `first` on, given the tokens before it. `on_window` is
    told how many tokens each window scored, as it goes."""
    values: list[float] = []
    for window in windows:
        scored = log_probs(window, len(window) // 2)
        values.extend(-v for v in scored)
        if on_window is not None:
            on_window(len(scored))
    return from_nll(values)


def from_nll(values: Sequence[float]) -> Perplexity:
    """exp(mean) of per-token negative log-likelihoods, with its standard error."""
    n = len(values)
    mean = sum(values) / n
    variance = sum((v - mean) ** 2 for v in values) / max(1, n - 1)
    value = math.exp(mean)
    return Perplexity(value, n, value * math.sqrt(variance / n))

"""Perplexity of a transformers model, on the same windows as a GGUF's (see `perplexity`)."""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmedge.backends.transformers.backend import load_causal_lm
from quantizers.perplexity import (
    DEFAULT_CTX_TOKENS,
    DEFAULT_SCORED_TOKENS,
    Perplexity,
    measure_windows,
    windows,
)


def perplexity_hf(
    model: Any,
    tokenizer: Any,
    text: str,
    *,
    ctx_tokens: int = DEFAULT_CTX_TOKENS,
    scored_tokens: int = DEFAULT_SCORED_TOKENS,
    on_window: Callable[[int], None] | None = None,
) -> Perplexity:
    """exp(mean negative log-likelihood) of `text` under a loaded causal LM."""
    import torch

    trained = getattr(model.config, "max_position_embeddings", None) or ctx_tokens
    tokens: list[int] = tokenizer(text, add_special_tokens=False).input_ids
    prepended = tokenizer("", add_special_tokens=True).input_ids[:1]
    bos = prepended[0] if prepended == [tokenizer.bos_token_id] else None
    device = next(model.parameters()).device

    def log_probs(window: list[int], first: int) -> list[float]:
        logits = model(input_ids=torch.tensor([window], device=device)).logits[0].float()
        # Logits at position i predict token i + 1: rows first - 1 .. len - 2.
        logprobs = torch.log_softmax(logits[first - 1 : len(window) - 1], dim=-1)
        targets = torch.tensor(window[first:], device=device)
        return [float(v) for v in logprobs.gather(1, targets[:, None])[:, 0]]

    with torch.inference_mode():
        chunks = windows(tokens, bos, min(ctx_tokens, trained), scored_tokens)
        return measure_windows(chunks, log_probs, on_window)


def measure(
    folder: Path,
    device: str,
    text: str,
    scored_tokens: int = DEFAULT_SCORED_TOKENS,
    on_window: Callable[[int], None] | None = None,
) -> Perplexity:
    """Load a folder (any format the transformers backend runs) and measure its perplexity."""
    model, tokenizer = load_causal_lm(folder, device)
    try:
        return perplexity_hf(
            model, tokenizer, text, scored_tokens=scored_tokens, on_window=on_window
        )
    finally:
        del model
        gc.collect()

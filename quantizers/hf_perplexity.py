"""Perplexity of a transformers model, on the same windows as a GGUF's (see `perplexity`)."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

from llmedge.backends.transformers_backend import load_causal_lm
from quantizers.perplexity import (
    DEFAULT_CTX_TOKENS,
    MAX_CHUNKS,
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
    max_chunks: int = MAX_CHUNKS,
) -> Perplexity:
    """exp(mean negative log-likelihood) of `text` under a loaded causal LM."""
    import torch

    trained = getattr(model.config, "max_position_embeddings", None) or ctx_tokens
    tokens: list[int] = tokenizer(text, add_special_tokens=False).input_ids
    prepended = tokenizer("", add_special_tokens=True).input_ids[:1]
    bos = prepended[0] if prepended == [tokenizer.bos_token_id] else None
    device = next(model.parameters()).device

    def log_likelihood(window: list[int], first: int) -> float:
        logits = model(input_ids=torch.tensor([window], device=device)).logits[0].float()
        # Logits at position i predict token i + 1: rows first - 1 .. len - 2.
        logprobs = torch.log_softmax(logits[first - 1 : len(window) - 1], dim=-1)
        targets = torch.tensor(window[first:], device=device)
        return float(logprobs.gather(1, targets[:, None]).sum())

    with torch.inference_mode():
        return measure_windows(
            windows(tokens, bos, min(ctx_tokens, trained), max_chunks), log_likelihood
        )


def measure(folder: Path, device: str, text: str) -> Perplexity:
    """Load a folder (any format the transformers backend runs) and measure its perplexity."""
    model, tokenizer = load_causal_lm(folder, device)
    try:
        return perplexity_hf(model, tokenizer, text)
    finally:
        del model
        gc.collect()

"""Perplexity of a transformers model, measured exactly as `gguf_perplexity` measures a GGUF.

Same text, same windows: chunks of `ctx_tokens` starting with the BOS token (when the tokenizer
adds one), only each chunk's second half scored, at most `max_chunks` chunks. So a GPTQ, AWQ or
NF4 figure sits beside the GGUF ladder's on one scale.
"""

from __future__ import annotations

import gc
import math
from pathlib import Path
from typing import Any

from llmedge.backends.transformers_backend import load_causal_lm
from llmedge.quant_types import QuantizationError
from quantizers.gguf_perplexity import DEFAULT_CTX_TOKENS, MAX_CHUNKS, Perplexity


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
    bos = prepended if prepended == [tokenizer.bos_token_id] else []
    ctx = min(ctx_tokens, trained, len(tokens))
    if ctx < 16:
        raise QuantizationError(f"the evaluation text is only {len(tokens)} tokens long")
    device = next(model.parameters()).device
    first = ctx // 2
    nll = 0.0
    scored = 0
    with torch.inference_mode():
        for start in range(0, min(len(tokens) // ctx, max_chunks) * ctx, ctx):
            chunk = tokens[start : start + ctx]
            if bos:
                chunk[0] = bos[0]
            logits = model(input_ids=torch.tensor([chunk], device=device)).logits[0].float()
            # Logits at position i predict token i + 1: score tokens first .. ctx - 1.
            logprobs = torch.log_softmax(logits[first - 1 : ctx - 1], dim=-1)
            targets = torch.tensor(chunk[first:], device=device)
            nll -= float(logprobs.gather(1, targets[:, None]).sum())
            scored += len(targets)
    return Perplexity(math.exp(nll / scored), scored)


def measure(folder: Path, device: str, text: str) -> Perplexity:
    """Load a folder (any format the transformers backend runs) and measure its perplexity."""
    model, tokenizer = load_causal_lm(folder, device)
    try:
        return perplexity_hf(model, tokenizer, text)
    finally:
        del model
        gc.collect()

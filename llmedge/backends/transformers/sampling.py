"""Picking the next token from PyTorch logits the way llama.cpp's sampler chain does.

Penalties first (repeat, presence, frequency over the tokens generated so far), then top-k,
top-p and min-p filtering, then temperature; greedy when the temperature is 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from llmedge.generation import SamplingParams, TokenLogprob


def new_generator(params: SamplingParams, device: Any) -> Any:
    """A random generator for this request (seeded when the request names a seed)."""
    import torch

    generator = torch.Generator(device=device)
    if params.seed is not None:
        generator.manual_seed(params.seed)
    else:
        generator.seed()
    return generator


def _penalize(logits: Any, params: SamplingParams, history: Sequence[int]) -> Any:
    import torch

    if not history or (
        params.repeat_penalty == 1.0
        and params.presence_penalty == 0.0
        and params.frequency_penalty == 0.0
    ):
        return logits
    ids, counts = torch.unique(
        torch.tensor(list(history), device=logits.device), return_counts=True
    )
    seen = logits[ids]
    if params.repeat_penalty != 1.0:
        seen = torch.where(seen > 0, seen / params.repeat_penalty, seen * params.repeat_penalty)
    seen = seen - params.presence_penalty - params.frequency_penalty * counts.to(seen.dtype)
    logits = logits.clone()
    logits[ids] = seen
    return logits


def sample_token(
    logits: Any, params: SamplingParams, history: Sequence[int], generator: Any
) -> int:
    """The next token from one row of float logits (a 1-D tensor over the vocabulary)."""
    import torch

    logits = _penalize(logits.float(), params, history)
    if params.logit_bias:
        ids = torch.tensor([token for token, _ in params.logit_bias], device=logits.device)
        biases = torch.tensor([bias for _, bias in params.logit_bias], device=logits.device)
        logits = logits.index_add(0, ids, biases)
    if params.temperature <= 0:
        return int(torch.argmax(logits))
    if 0 < params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if 0 < params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # Keep the smallest set whose mass reaches top_p (the first token always stays).
        drop = sorted_probs.cumsum(-1) - sorted_probs > params.top_p
        logits = logits.masked_fill(torch.empty_like(drop).scatter_(0, order, drop), float("-inf"))
    if params.min_p > 0:
        probs = torch.softmax(logits, dim=-1)
        logits = logits.masked_fill(probs < params.min_p * probs.max(), float("-inf"))
    probs = torch.softmax(logits / params.temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def token_logprob(
    logits: Any, token: int, top_n: int, piece: Callable[[int], bytes]
) -> TokenLogprob:
    """Log-softmax of the raw logits at the chosen token, with the `top_n` best alternatives."""
    import torch

    logprobs = torch.log_softmax(logits.float(), dim=-1)
    top: tuple[tuple[str, float], ...] = ()
    if top_n > 0:
        values, ids = torch.topk(logprobs, top_n)
        top = tuple(
            (piece(int(i)).decode("utf-8", "replace"), float(v))
            for v, i in zip(values.tolist(), ids.tolist(), strict=True)
        )
    raw = piece(token)
    return TokenLogprob(
        token=raw.decode("utf-8", "replace"),
        logprob=float(logprobs[token]),
        bytes=tuple(raw),
        top=top,
    )

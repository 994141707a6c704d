"""Sampler chains and log-probabilities for llama.cpp, from llmedge's SamplingParams."""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from llmedge.errors import InvalidRequestError
from llmedge.generation import SamplingParams, TokenLogprob

PENALTY_LAST_N = 64
_MASK64 = (1 << 64) - 1
_RANDOM_SEED = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: llama.cpp draws a random seed for it


def sampler_seed(seed: int) -> int:
    """A 64-bit seed, signed or unsigned, as the 32 bits llama.cpp's sampler takes.

    SplitMix64's finaliser spreads every bit of the seed over the result, so seeds that differ
    only above bit 31 (which truncation would merge: 1 and 2**32 + 1) give different streams;
    the value llama.cpp reads as "random" is never produced."""
    x = seed & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    x ^= x >> 31
    folded = (x ^ (x >> 32)) & 0xFFFFFFFF
    return 0 if folded == _RANDOM_SEED else folded


def _logit_bias(lib: Any, n_vocab: int, pairs: tuple[tuple[int, float], ...]) -> Any:
    outside = [token for token, _ in pairs if not 0 <= token < n_vocab]
    if outside:
        raise InvalidRequestError(
            f"logit_bias: token {outside[0]} is outside the model's vocabulary "
            f"(ids 0 to {n_vocab - 1})",
            param="logit_bias",
        )
    array = (lib.llama_logit_bias * len(pairs))()
    for item, (token, bias) in zip(array, pairs, strict=True):
        item.token, item.bias = token, bias
    return lib.llama_sampler_init_logit_bias(n_vocab, len(pairs), array)


def build_sampler(lib: Any, vocab: Any, n_vocab: int, params: SamplingParams) -> Any:
    """A sampler chain in llama-server's order: grammar, logit bias, penalties, top-k/p, min-p,
    temperature."""
    bias = _logit_bias(lib, n_vocab, params.logit_bias) if params.logit_bias else None
    chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())

    def add(sampler: Any) -> None:
        lib.llama_sampler_chain_add(chain, sampler)

    if params.grammar:
        grammar = lib.llama_sampler_init_grammar(vocab, params.grammar.encode(), b"root")
        if not grammar:
            lib.llama_sampler_free(chain)
            if bias is not None:
                lib.llama_sampler_free(bias)
            raise InvalidRequestError("the grammar does not parse", param="response_format")
        add(grammar)
    if bias is not None:
        add(bias)
    if (params.repeat_penalty, params.frequency_penalty, params.presence_penalty) != (1.0, 0, 0):
        add(
            lib.llama_sampler_init_penalties(
                n_vocab,
                PENALTY_LAST_N,
                params.repeat_penalty,
                params.frequency_penalty,
                params.presence_penalty,
            )
        )
    if params.temperature <= 0:
        add(lib.llama_sampler_init_greedy())
        return chain
    if params.top_k > 0:
        add(lib.llama_sampler_init_top_k(params.top_k))
    add(lib.llama_sampler_init_top_p(params.top_p, 1))
    add(lib.llama_sampler_init_min_p(params.min_p, 1))
    add(lib.llama_sampler_init_temp(params.temperature))
    seed = lib.LLAMA_DEFAULT_SEED if params.seed is None else sampler_seed(params.seed)
    add(lib.llama_sampler_init_dist(seed))
    return chain


def token_logprob(
    logits_ptr: Any, n_vocab: int, token: int, top_n: int, piece: Any
) -> TokenLogprob:
    """Log-softmax of the raw logits at the chosen token, with the `top_n` best alternatives."""
    logits = np.ctypeslib.as_array(
        ctypes.cast(logits_ptr, ctypes.POINTER(ctypes.c_float)), shape=(n_vocab,)
    ).astype(np.float64)
    peak = logits.max()
    log_norm = peak + np.log(np.exp(logits - peak).sum())
    top: tuple[tuple[str, float], ...] = ()
    if top_n > 0:
        best = np.argpartition(-logits, top_n - 1)[:top_n]
        best = best[np.argsort(-logits[best])]
        top = tuple(
            (piece(int(i)).decode("utf-8", "replace"), float(logits[i] - log_norm)) for i in best
        )
    raw: bytes = piece(token)
    return TokenLogprob(
        token=raw.decode("utf-8", "replace"),
        logprob=float(logits[token] - log_norm),
        bytes=tuple(raw),
        top=top,
    )

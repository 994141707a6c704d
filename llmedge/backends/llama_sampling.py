"""Sampler chains and log-probabilities for llama.cpp, from llmedge's SamplingParams."""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from llmedge.errors import InvalidRequestError
from llmedge.generation import SamplingParams, TokenLogprob

PENALTY_LAST_N = 64


def build_sampler(lib: Any, vocab: Any, n_vocab: int, params: SamplingParams) -> Any:
    """A sampler chain in llama-server's order: grammar, penalties, top-k/p, min-p, temperature."""
    chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())

    def add(sampler: Any) -> None:
        lib.llama_sampler_chain_add(chain, sampler)

    if params.grammar:
        grammar = lib.llama_sampler_init_grammar(vocab, params.grammar.encode(), b"root")
        if not grammar:
            lib.llama_sampler_free(chain)
            raise InvalidRequestError("the grammar does not parse", param="response_format")
        add(grammar)
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
    seed = lib.LLAMA_DEFAULT_SEED if params.seed is None else params.seed & 0xFFFFFFFF
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

"""Asks llama.cpp's own grammar sampler whether a grammar parses and which texts it allows."""

from __future__ import annotations

import ctypes
import math
from typing import Any


def grammar_parses(vocab: Any, grammar: str) -> bool:
    import llama_cpp

    sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
    if sampler:
        llama_cpp.llama_sampler_free(sampler)
    return bool(sampler)


def grammar_allows(vocab: Any, grammar: str, text: str) -> bool:
    """Whether the grammar lets a model write `text`, token by token. Each token is offered to
    the sampler alone and accepted only when it survives (accepting a forbidden token would make
    llama.cpp throw through its C API)."""
    import llama_cpp

    data = text.encode()
    tokens = (llama_cpp.llama_token * (len(data) + 2))()
    n = llama_cpp.llama_tokenize(vocab, data, len(data), tokens, len(data) + 2, False, False)
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
    assert sampler, "the grammar does not parse"
    candidate = (llama_cpp.llama_token_data * 1)()
    try:
        for token in tokens[:n]:
            candidate[0].id, candidate[0].logit = token, 0.0
            array = llama_cpp.llama_token_data_array(candidate, 1, -1, False)
            llama_cpp.llama_sampler_apply(sampler, ctypes.byref(array))
            if math.isinf(candidate[0].logit):
                return False
            llama_cpp.llama_sampler_accept(sampler, token)
        return True
    finally:
        llama_cpp.llama_sampler_free(sampler)

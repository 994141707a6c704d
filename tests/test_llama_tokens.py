"""Long prompts tokenize in linear time, into exactly the tokens one llama.cpp call gives."""

from __future__ import annotations

import random
from typing import Any

import pytest

from llmedge.backends.llama import tokens as llama_tokens
from llmedge.backends.llama.tokens import SpecialTokenSplitter

PARTS = ["<|im_start|>", "<|im_end|>", "user\n", " hello", "  ", "\n", "<|endoftext|>",
         "héllo wörld", "<repo_name>", "x", "<|im_start", "|>", "\t", "<|im_end|>\n"]  # fmt: skip


def _whole(vocab: Any, text: str) -> list[int]:
    import llama_cpp

    data = text.encode()
    tokens = (llama_cpp.llama_token * (len(data) + 2))()
    n = llama_cpp.llama_tokenize(vocab, data, len(data), tokens, len(data) + 2, False, True)
    return list(tokens[:n])


@pytest.fixture(scope="module")
def splitter(llama_vocab: Any) -> SpecialTokenSplitter:
    import llama_cpp

    return SpecialTokenSplitter(llama_cpp, llama_vocab)


def test_pieces_give_the_same_tokens_as_one_call(
    llama_vocab: Any, splitter: SpecialTokenSplitter
) -> None:
    rng = random.Random(0)
    for _ in range(100):
        text = "".join(rng.choice(PARTS) for _ in range(rng.randint(100, 600)))
        assert splitter.tokenize(text) == _whole(llama_vocab, text), text


def test_each_piece_holds_a_bounded_number_of_special_tokens(
    splitter: SpecialTokenSplitter, monkeypatch: pytest.MonkeyPatch
) -> None:
    pieces: list[str] = []
    real = splitter._tokenize
    monkeypatch.setattr(splitter, "_tokenize", lambda text: pieces.append(text) or real(text))
    text = "<|im_start|>user\nhi<|im_end|>\n" * 10_000
    tokens = splitter.tokenize(text)
    assert len(tokens) == 10_000 * 6  # specials and words, as the model reads them
    assert "".join(pieces) == text
    assert max(p.count("<|im_") for p in pieces) <= llama_tokens.PIECE_SPECIALS

"""Tokenizing long prompts in time linear in their length.

llama.cpp finds special tokens (`<|im_start|>`, …) in a prompt with work that grows with the
square of how many there are: 16,000 chat messages (two specials each) took 13 s, 100,000 never
finished. Here the prompt is cut, before llama.cpp sees it, into pieces that each hold at most
PIECE_SPECIALS of them, always cut where a special token starts; llama.cpp already tokenizes
the text between special tokens piece by piece, so the tokens are the same as in one call. A
prompt with few special tokens, every ordinary chat, goes to llama.cpp whole, exactly as before.
"""

from __future__ import annotations

import re
from itertools import pairwise
from typing import Any

from llmedge.errors import LlmedgeError

PIECE_SPECIALS = 64


def _trie_pattern(words: list[str]) -> str:
    """A regex matching any of `words`, longest first, that tries one branch per character."""
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def pattern(node: dict[str, Any]) -> str:
        branches = [re.escape(c) + pattern(sub) for c, sub in sorted(node.items()) if c]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return pattern(trie)


class SpecialTokenSplitter:
    """Tokenizes with llama.cpp, `parse_special` on, cutting long prompts into pieces first."""

    def __init__(self, lib: Any, vocab: Any) -> None:
        self._lib = lib
        self._vocab = vocab
        kinds = lib.LLAMA_TOKEN_ATTR_CONTROL | lib.LLAMA_TOKEN_ATTR_USER_DEFINED
        kinds |= lib.LLAMA_TOKEN_ATTR_UNKNOWN
        specials: dict[str, int] = {}
        for token in range(lib.llama_vocab_n_tokens(vocab)):
            attr = lib.llama_vocab_get_attr(vocab, token)
            if attr & kinds:
                text = (lib.llama_vocab_get_text(vocab, token) or b"").decode("utf-8", "replace")
                if text:
                    specials[text] = attr
        self._lstrip = {t for t, a in specials.items() if a & lib.LLAMA_TOKEN_ATTR_LSTRIP}
        words = sorted(specials, key=len, reverse=True)
        self._finder = re.compile(_trie_pattern(words)) if words else None

    def _cuts(self, text: str) -> list[int]:
        """Where pieces start: every PIECE_SPECIALS-th special token (before the whitespace in
        front of one that strips it, so the strip still sees it)."""
        if self._finder is None:
            return []
        cuts: list[int] = []
        seen = 0
        for match in self._finder.finditer(text):
            seen += 1
            if seen % PIECE_SPECIALS:
                continue
            start = match.start()
            if match.group(0) in self._lstrip:
                while start > 0 and text[start - 1].isspace():
                    start -= 1
            if start > (cuts[-1] if cuts else 0):
                cuts.append(start)
        return cuts

    def _tokenize(self, text: str) -> list[int]:
        data = text.encode("utf-8")
        capacity = len(data) + 2
        tokens = (self._lib.llama_token * capacity)()
        n = self._lib.llama_tokenize(self._vocab, data, len(data), tokens, capacity, False, True)
        if n < 0:
            raise LlmedgeError(f"llama.cpp could not tokenize the prompt ({n})")
        return list(tokens[:n])

    def tokenize(self, text: str) -> list[int]:
        """The prompt's tokens (no BOS added), special tokens parsed."""
        bounds = [0, *self._cuts(text), len(text)]
        result: list[int] = []
        for start, end in pairwise(bounds):
            result += self._tokenize(text[start:end])
        return result

"""Draft tokens for speculative decoding, and how many to propose.

A slot that generates proposes a few tokens it guesses come next; the scheduler decodes them in
the same step as the slot's real next token and keeps the prefix its own sampler agrees with.
Sampling each kept row once, in order, with the slot's sampler chain is exactly sampling without
drafts: greedy answers stay token for token the same, and sampled ones keep their distribution
(and, with a seed, their very tokens). A draft only costs the rows it adds to a decode step, and
the scheduler proposes one only where those rows pay (`llmedge.backends.llama.draft_plan`).

`NgramDrafts` guesses from the slot's own context, prompt included (prompt lookup decoding): the
tokens that followed the last earlier occurrence of its latest n-gram. Input-grounded answers
(rewrites, code edits, quotes, RAG) repeat long spans of their prompt and accept most drafts;
open-ended chat rarely finds a match and then drafts nothing. `DraftLength` adapts each slot's
proposal to what it has been accepting, and rests a slot whose drafts keep failing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

# N-gram lengths looked up, longest first: 2 tokens is the shortest repeat worth trusting.
NGRAM_MAX = 4
NGRAM_MIN = 2


class NgramDrafts:
    """An index of one context's n-grams, grown as tokens are appended.

    For each n-gram length it maps an n-gram to the position right after its latest occurrence
    that already has a continuation, so the context's own last n-gram (whose continuation is
    what is being guessed) never matches itself.
    """

    def __init__(self, tokens: Sequence[int] = ()) -> None:
        self.tokens: list[int] = []
        self._after: list[dict[tuple[int, ...], int]] = [{} for _ in range(NGRAM_MAX + 1)]
        self.extend(tokens)

    def extend(self, tokens: Sequence[int]) -> None:
        for token in tokens:
            self.tokens.append(token)
            end = len(self.tokens) - 1  # the n-grams ending just before the new token now
            for n in range(NGRAM_MIN, NGRAM_MAX + 1):  # have a continuation: this token
                if end >= n:
                    self._after[n][tuple(self.tokens[end - n : end])] = end

    def propose(self, limit: int) -> list[int]:
        """Up to `limit` tokens that followed the longest repeat of the context's end."""
        tokens = self.tokens
        for n in range(NGRAM_MAX, NGRAM_MIN - 1, -1):
            if len(tokens) <= n:
                continue
            start = self._after[n].get(tuple(tokens[-n:]))
            if start is not None:
                return tokens[start : start + limit]
        return []


# How long drafts grow, and how long a slot whose drafts fail rests.
DRAFT_START = 4
DRAFT_MAX = 32
DRAFT_MIN = 1
REST_STEPS_MAX = 64
# A slot's expected share of guesses accepted before it has made any, and how fast its own
# record fades back to that each step: about what an n-gram match gets on input-grounded text.
ACCEPT_PRIOR = 0.7
ACCEPT_FADE = 0.05


@dataclass
class DraftLength:
    """How many tokens a slot proposes next: more while its drafts are accepted whole, fewer when
    they are cut short; after two drafts in a row are rejected outright, or a draft that would
    not pay, it rests (proposes nothing) for a while, twice as long each time, until one is
    accepted again. Its first draft, and the first after a rest, probe (`probe`): they show how
    its guesses fare now."""

    length: int = DRAFT_START
    misses: int = 0
    resting: int = 0
    rest_steps: int = 1
    probe: bool = True
    drafted: int = field(default=0)  # guesses proposed over the answer
    accepted: int = field(default=0)  # and kept
    # The share of recent guesses accepted, the latest draft counting half: acceptance comes in
    # runs (a copied span accepts everything, then nothing), so the recent past says most.
    accept_rate: float = ACCEPT_PRIOR

    def wanted(self) -> int:
        self.accept_rate += (ACCEPT_PRIOR - self.accept_rate) * ACCEPT_FADE
        if self.resting:
            self.resting -= 1
            self.probe = not self.resting
            return 0
        return self.length

    def adapt(self, drafted: int, accepted: int) -> None:
        """Follow a draft's outcome (its tokens are counted in `drafted` and `accepted` by the
        scheduler as it samples them, before the answer can end)."""
        if not drafted:
            return
        self.probe = False
        self.accept_rate = (self.accept_rate + accepted / drafted) / 2
        if accepted == drafted:
            self.length = min(DRAFT_MAX, self.length * 2)
            self.misses, self.rest_steps = 0, 1
        elif accepted:
            self.length = max(DRAFT_MIN, min(accepted + 1, DRAFT_START))
            self.misses, self.rest_steps = 0, 1
        else:
            self.length = max(DRAFT_MIN, self.length // 2)
            self.misses += 1
            if self.misses >= 2:
                self.rest()
                self.misses = 0

    def rest(self) -> None:
        """Propose nothing for a while (its draft failed twice, or would not pay), twice as long
        as the last time; then probe."""
        self.resting = self.rest_steps
        self.rest_steps = min(REST_STEPS_MAX, self.rest_steps * 2)

"""Which guesses a decode step carries: what a step costs by its rows, learned while decoding,
and the drafts that pay for theirs.

On a CPU a step's time grows with its rows: a fixed part (the graph, reading the weights once)
and a part per row (each row's arithmetic). A draft adds rows that yield tokens only when they
are accepted, so it pays when its expected tokens per added second beat what the step already
makes per second: always worth it for one stream on a small model, a loss once several streams
share the step and their arithmetic dominates. The fit is least squares over recent steps,
older ones fading, so it follows the host (and what else runs on it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from llmedge.backends.llama.draft_model import DraftModel
from llmedge.backends.llama.slots import Slot

# Each step's weight in the fit fades by this much per later step (about 50 steps' memory).
DECAY = 0.98
# Row counts must have varied this much (their variance) before the slope is trusted.
MIN_ROWS_VARIANCE = 0.5


def expected_tokens(length: int, accept_rate: float) -> float:
    """Tokens a draft of `length` is expected to add, each guess accepted with `accept_rate`
    only if the ones before it were: p + p^2 + ... + p^length."""
    p = min(max(accept_rate, 0.0), 0.999)
    return p * (1 - p**length) / (1 - p)


@dataclass
class StepCost:
    """seconds ~ fixed_s + row_s * rows, fitted over the steps recorded so far."""

    _w: float = 0.0
    _x: float = 0.0
    _y: float = 0.0
    _xx: float = 0.0
    _xy: float = 0.0
    _fitted: tuple[float, float] | None = field(default=None, repr=False)
    _stale: bool = field(default=True, repr=False)

    def record(self, rows: int, seconds: float) -> None:
        self._stale = True
        self._w = self._w * DECAY + 1
        self._x = self._x * DECAY + rows
        self._y = self._y * DECAY + seconds
        self._xx = self._xx * DECAY + rows * rows
        self._xy = self._xy * DECAY + rows * seconds

    def fit(self) -> tuple[float, float] | None:
        """(fixed seconds, seconds per row), or None until the rows have varied enough."""
        if self._stale:  # asked for every draft considered: fitted once per recorded step
            self._fitted, self._stale = self._solve(), False
        return self._fitted

    def _solve(self) -> tuple[float, float] | None:
        if self._w < 2:
            return None
        mean_x, mean_y = self._x / self._w, self._y / self._w
        variance = self._xx / self._w - mean_x * mean_x
        if variance < MIN_ROWS_VARIANCE:
            return None
        row_s = max((self._xy / self._w - mean_x * mean_y) / variance, 1e-7)
        return max(mean_y - row_s * mean_x, 0.0), row_s

    def draft_pays(self, rows: int, tokens: float, length: int, accept_rate: float) -> bool:
        """Whether a draft of `length` rows, each guess accepted with `accept_rate`, makes more
        tokens per second than the step of `rows` rows making `tokens` tokens already does.
        True while the cost is unknown."""
        cost = self.fit()
        if cost is None:
            return True
        fixed_s, row_s = cost
        gain_per_s = expected_tokens(length, accept_rate) / (row_s * length)
        return gain_per_s > tokens / (fixed_s + row_s * rows)


def up_to_end(guess: list[int], ends: Callable[[int], bool]) -> list[int]:
    """The guess up to its first end-of-generation token: a guess after that one can never be
    kept (the answer ends there, or the end was itself refused)."""
    for i, token in enumerate(guess):
        if ends(token):
            return guess[: i + 1]
    return guess


class DraftPlanner:
    """Chooses each step's draft tokens: for every generating slot, as many guesses as pay for
    their rows (`StepCost.draft_pays`), from n-gram lookup or the draft model."""

    def __init__(
        self, draft_model: DraftModel | None, n_ctx_seq: int, ends: Callable[[int], bool]
    ) -> None:
        self.cost = StepCost()
        self._draft_model = draft_model
        self._n_ctx_seq = n_ctx_seq
        self._ends = ends  # whether a token ends an answer (end of generation)

    def plan(self, generating: list[Slot], rows: int, room: int) -> dict[int, list[int]]:
        """Each drafting slot's guesses for this step, within `room` rows in all, and only the
        ones that pay for their rows in a step of `rows` rows (`StepCost`); the slots whose
        guesses are accepted most go first."""
        wanted: dict[int, int] = {}
        guesses: dict[int, list[int]] = {}
        tokens = float(len(generating))
        ranked = sorted(
            generating,
            key=lambda s: -s.request.draft_length.accept_rate if s.request else 0.0,
        )
        for slot in ranked:
            request = slot.request
            assert request is not None
            if not request.drafting or room <= 0:
                continue
            # Never guess past the answer's token limit or the sequence's context.
            left = min(
                request.max_tokens - len(request.generated) - 1,
                self._n_ctx_seq - len(slot.kv_tokens) - 2,
            )
            length = min(request.draft_length.wanted(), left, room)
            rate = request.draft_length.accept_rate
            while length > 0 and not self.cost.draft_pays(rows, tokens, length, rate):
                length //= 2
            if length <= 0:
                continue
            if self._draft_model is None:  # n-gram lookup: only a guess found takes rows
                assert request.drafts is not None
                guess = up_to_end(request.drafts.propose(length), self._ends)
                if not guess:
                    continue
                guesses[slot.seq_id] = guess
                length = len(guess)
            wanted[slot.seq_id] = length
            room -= length
            rows += length
            tokens += expected_tokens(length, rate)
        if self._draft_model is None or not wanted:
            return guesses
        contexts = {}
        for slot in generating:
            if slot.seq_id in wanted:
                assert slot.request is not None
                contexts[slot.seq_id] = (slot.request.context(), wanted[slot.seq_id])
        proposed = self._draft_model.propose(contexts)
        return {seq: up_to_end(guess, self._ends) for seq, guess in proposed.items()}

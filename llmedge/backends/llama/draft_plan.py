"""Which guesses a decode step carries: what a step costs by its rows, learned while decoding,
and the drafts that pay for theirs.

On a CPU a step's time grows with its rows, and not along one line: the first row reads the
weights, a second can cost as much again, later rows each their arithmetic. A draft adds rows
that yield tokens only when they are accepted, so it pays when the step with it is expected to
make more tokens per second than without: worth it for one stream copying its prompt, a loss for
a guess that is seldom kept, or once several streams share the step and their arithmetic
dominates. Costs are running means by band of row counts, older steps fading, so they follow
the host (and what else runs on it). A lone stream tries what is not known yet: a draft of more
rows than ever decoded at once goes ahead and measures them, and one that has not shown how its
guesses fare (a new answer, or one back from a rest) is judged as if they were kept at
`PROBE_RATE`: the draft that tells."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable

from llmedge.backends.llama.draft_model import DraftModel
from llmedge.backends.llama.slots import Slot

# Each step's weight in its band's mean fades by this much per later step in that band.
DECAY = 0.95
# Row counts up to this one have a band each; above it, each band is twice as wide as the last.
EXACT_BANDS = 8
# The acceptance a draft that probes is judged by: high, as a copying answer's are.
PROBE_RATE = 0.9


def expected_tokens(length: int, accept_rate: float) -> float:
    """Tokens a draft of `length` is expected to add, each guess accepted with `accept_rate`
    only if the ones before it were: p + p^2 + ... + p^length."""
    p = min(max(accept_rate, 0.0), 0.999)
    return p * (1 - p**length) / (1 - p)


def _band(rows: int) -> int:
    if rows <= EXACT_BANDS:
        return rows
    return EXACT_BANDS + math.ceil(math.log2(rows / EXACT_BANDS))


class StepCost:
    """Seconds a step of so many rows takes, learned from the steps decoded: each band of row
    counts (1 to 8 each, then by doubling) keeps the running mean of its steps' rows and
    seconds, and a count between two bands' means is read off the straight line between them
    (below the first two, off theirs; above the last, it is not known yet). Not one line for
    all: on a CPU a second row can cost as much as the first (a kernel that does not share its
    reads of the weights between rows), and later rows less."""

    def __init__(self) -> None:
        self._bands: dict[int, list[float]] = {}  # band: [weight, rows, seconds], decayed sums
        self._points: list[tuple[float, float]] | None = None  # (rows, seconds), by rows

    def record(self, rows: int, seconds: float) -> None:
        sums = self._bands.setdefault(_band(rows), [0.0, 0.0, 0.0])
        sums[0] = sums[0] * DECAY + 1
        sums[1] = sums[1] * DECAY + rows
        sums[2] = sums[2] * DECAY + seconds
        self._points = None

    def seconds(self, rows: int) -> float | None:
        """What a step of `rows` rows is expected to take; None until two bands are measured,
        or for more rows than any measured."""
        if self._points is None:  # asked for every draft considered: sorted once per step
            self._points = sorted((r / w, s / w) for w, r, s in self._bands.values())
        points = self._points
        if len(points) < 2 or rows > points[-1][0]:
            return None
        i = min(max(bisect_left(points, (rows, 0.0)), 1), len(points) - 1)
        (x0, y0), (x1, y1) = points[i - 1], points[i]
        slope = max((y1 - y0) / (x1 - x0), 0.0) if x1 > x0 else 0.0
        return max(y0 + slope * (rows - x0), 1e-6)

    def draft_pays(
        self, rows: int, tokens: float, length: int, accept_rate: float, explore: bool = True
    ) -> bool:
        """Whether a draft of `length` rows, each guess accepted with `accept_rate`, makes the
        step of `rows` rows, which makes `tokens` tokens, yield more tokens per second; where
        the costs are not known yet, `explore`."""
        now, then = self.seconds(rows), self.seconds(rows + length)
        if now is None or then is None:
            return explore
        return (tokens + expected_tokens(length, accept_rate)) / then > tokens / now


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
            record = request.draft_length
            length = min(record.wanted(), left, room)
            if length <= 0:
                continue
            # Trying is cheap for a lone stream, and worth it: a copy doubles its speed. In a step
            # shared with other streams a draft goes only where the costs known say it pays.
            alone = len(generating) == 1
            rate = record.accept_rate
            if record.probe and alone:
                rate = max(rate, PROBE_RATE)
            while length > 0 and not self.cost.draft_pays(rows, tokens, length, rate, alone):
                length //= 2
            if length <= 0:
                record.rest()  # its draft would not pay
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

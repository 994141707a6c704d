"""What a decode step costs by its rows, learned while decoding, and whether a draft pays.

On a CPU a step's time grows with its rows: a fixed part (the graph, reading the weights once)
and a part per row (each row's arithmetic). A draft adds rows that yield tokens only when they
are accepted, so it pays when its expected tokens per added second beat what the step already
makes per second: always worth it for one stream on a small model, a loss once several streams
share the step and their arithmetic dominates. The fit is least squares over recent steps,
older ones fading, so it follows the host (and what else runs on it).
"""

from __future__ import annotations

from dataclasses import dataclass

# Each step's weight in the fit fades by this much per later step (about 50 steps' memory).
DECAY = 0.98
# Row counts must have varied this much (their variance) before the slope is trusted.
MIN_ROWS_VARIANCE = 0.5


@dataclass
class StepCost:
    """seconds ~ fixed_s + row_s * rows, fitted over the steps recorded so far."""

    _w: float = 0.0
    _x: float = 0.0
    _y: float = 0.0
    _xx: float = 0.0
    _xy: float = 0.0

    def record(self, rows: int, seconds: float) -> None:
        self._w = self._w * DECAY + 1
        self._x = self._x * DECAY + rows
        self._y = self._y * DECAY + seconds
        self._xx = self._xx * DECAY + rows * rows
        self._xy = self._xy * DECAY + rows * seconds

    def fit(self) -> tuple[float, float] | None:
        """(fixed seconds, seconds per row), or None until the rows have varied enough."""
        if self._w < 2:
            return None
        mean_x, mean_y = self._x / self._w, self._y / self._w
        variance = self._xx / self._w - mean_x * mean_x
        if variance < MIN_ROWS_VARIANCE:
            return None
        row_s = max((self._xy / self._w - mean_x * mean_y) / variance, 1e-7)
        return max(mean_y - row_s * mean_x, 0.0), row_s

    def draft_pays(self, rows: int, tokens: float, length: int, accept_rate: float) -> bool:
        """Whether `length` more rows, each accepted with `accept_rate` (in order, so the
        expected tokens are p + p^2 + ... + p^length), make more tokens per second than the step
        of `rows` rows making `tokens` tokens already does. True while the cost is unknown."""
        cost = self.fit()
        if cost is None:
            return True
        fixed_s, row_s = cost
        p = min(max(accept_rate, 0.0), 0.999)
        expected = p * (1 - p**length) / (1 - p)
        return expected / (row_s * length) > tokens / (fixed_s + row_s * rows)

"""Finds stop strings in streamed text without ever emitting part of one."""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    """Feed text as it streams; get back what is safe to emit and whether a stop was hit."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self._held = ""
        self.matched: str | None = None  # the stop string that ended the text, once one has

    def feed(self, text: str) -> tuple[str, bool]:
        buffer = self._held + text
        hits = [(at, s) for s in self.stops if (at := buffer.find(s)) >= 0]
        if hits:
            first, self.matched = min(hits, key=lambda hit: hit[0])
            self._held = ""
            return buffer[:first], True
        keep = self._partial_suffix(buffer)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep], False

    def flush(self) -> str:
        """Text held back at the end of a stream that never completed a stop string."""
        held, self._held = self._held, ""
        return held

    def _partial_suffix(self, buffer: str) -> int:
        """Length of the longest end of `buffer` that begins some stop string."""
        longest = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if buffer.endswith(stop[:n]):
                    longest = n
                    break
        return longest

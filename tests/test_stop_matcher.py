"""Stop strings found across chunk boundaries, never emitted in part."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from llmedge.prompting import StopMatcher


def feed_all(matcher: StopMatcher, pieces: list[str]) -> tuple[str, bool]:
    out = []
    for piece in pieces:
        text, stopped = matcher.feed(piece)
        out.append(text)
        if stopped:
            return "".join(out), True
    return "".join(out) + matcher.flush(), False


def test_a_stop_split_across_chunks_is_caught() -> None:
    assert feed_all(StopMatcher(["</end>"]), ["hello </e", "nd> world"]) == ("hello ", True)


def test_a_false_start_is_released() -> None:
    matcher = StopMatcher(["STOP"])
    assert matcher.feed("ST") == ("", False)
    assert matcher.feed("ART") == ("START", False)


def test_the_earliest_of_several_stops_wins() -> None:
    assert feed_all(StopMatcher(["b", "a"]), ["xxab"]) == ("xx", True)


@given(
    st.text(max_size=40), st.lists(st.integers(0, 40), max_size=6), st.text(min_size=1, max_size=4)
)
def test_any_chunking_gives_the_same_result(text: str, cuts: list[int], stop: str) -> None:
    bounds = sorted({0, len(text), *[min(c, len(text)) for c in cuts]})
    pieces = [text[a:b] for a, b in itertools.pairwise(bounds)]
    expected = (text[: text.index(stop)], True) if stop in text else (text, False)
    assert feed_all(StopMatcher([stop]), pieces) == expected

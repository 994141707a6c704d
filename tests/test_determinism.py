"""The suite cannot fail on a random draw: property tests run the same examples every time."""

from __future__ import annotations

from hypothesis import settings


def test_property_tests_are_derandomized_and_remember_nothing() -> None:
    current = settings()
    assert current.derandomize and current.database is None

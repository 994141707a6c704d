"""Hypothesis strategies for JSON schemas with large and nested bounds, shared by the grammar
property test and scripts/fuzz_grammar.py."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

# Bounds around every limit the converter enforces, and far past them.
BOUNDS = st.one_of(
    st.integers(0, 20),
    st.sampled_from([999, 1000, 1001, 1999, 2000, 2001, 17_187, 18_750, 100_000]),
    st.sampled_from([999_999, 1_000_000, 1_000_001, 10**9]),
)
PATTERN_PARTS = st.sampled_from(["a", "[0-9]", ".", "(ab|c)", "\\{", "x?", "[^\\n]"])


@st.composite
def patterns(draw: st.DrawFn) -> str:
    parts = []
    for part in draw(st.lists(PATTERN_PARTS, min_size=1, max_size=4)):
        if draw(st.booleans()):
            lo = draw(st.integers(0, 1200))
            hi = draw(st.one_of(st.none(), st.integers(lo, lo + 1200)))
            part = f"({part}){{{lo},{'' if hi is None else hi}}}"
        parts.append(part)
    return "^" + "".join(parts) + "$"


def _bounded(kind: str, low: str, high: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"type": st.just(kind)}, optional={low: BOUNDS, high: BOUNDS})


LEAVES = st.one_of(
    _bounded("string", "minLength", "maxLength"),
    st.builds(lambda p: {"type": "string", "pattern": p}, patterns()),
    st.sampled_from(
        [
            {"type": "integer"},
            {"type": "number"},
            {"type": "boolean"},
            {"type": "null"},
            {"type": "string", "format": "date"},
            {"enum": ["a", 1, None]},
            {"const": {"k": [1, 2]}},
            {},
            True,
        ]
    ),
)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    def obj(props: dict[str, Any], required: list[str], extra: Any) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "object", "properties": props}
        schema["required"] = [k for k in required if k in props]
        if extra is not None:
            schema["additionalProperties"] = extra
        return schema

    def arr(items: Any, bounds: dict[str, int]) -> dict[str, Any]:
        return {"type": "array", "items": items, **bounds}

    names = st.sampled_from(["a", "b", "c", "d", "e f", 'q"uote'])
    return st.one_of(
        st.builds(
            obj,
            st.dictionaries(names, children, max_size=5),
            st.lists(names, max_size=5),
            st.one_of(st.none(), st.booleans(), children),
        ),
        st.builds(
            arr,
            children,
            st.fixed_dictionaries({}, optional={"minItems": BOUNDS, "maxItems": BOUNDS}),
        ),
        st.builds(lambda alts: {"anyOf": alts}, st.lists(children, min_size=1, max_size=3)),
    )


SCHEMAS = st.recursive(LEAVES, _containers, max_leaves=12)


def deep_schema(depth: int, leaf: dict[str, Any]) -> dict[str, Any]:
    """`leaf` inside `depth` nested objects."""
    schema = leaf
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema

"""64-bit seeds onto llama.cpp's 32-bit sampler seed: no systematic collisions, never 'random'."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from llmedge.backends.llama.sampling import sampler_seed

SEEDS = st.integers(min_value=-(2**63), max_value=2**64 - 1)


def test_seeds_that_truncation_would_merge_stay_apart() -> None:
    for low in (0, 1, 42, 2**31, 2**32 - 1):
        mapped = {sampler_seed(low + (high << 32)) for high in range(64)}
        assert len(mapped) == 64
    assert sampler_seed(-1) != sampler_seed(2**32 - 1)  # -1 is not llama.cpp's "random"
    assert len({sampler_seed(s) for s in range(10_000)}) > 9_980  # as good as random draws


@given(SEEDS)
def test_every_seed_maps_into_32_bits_repeatably(seed: int) -> None:
    mapped = sampler_seed(seed)
    assert 0 <= mapped < 0xFFFFFFFF and mapped == sampler_seed(seed)
    assert sampler_seed(seed) == sampler_seed(seed % 2**64)  # signed and unsigned spellings agree

"""The quantization types llmedge pulls or produces, named as llama.cpp names them."""

from __future__ import annotations

from llmedge.errors import InvalidRequestError
from llmedge.gguf.ggml_types import FILE_TYPES

# llama.cpp's quantization ladder, smallest to largest: what `llmedge quantize` produces.
LADDER = (
    "q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_0", "q4_1", "q4_k_s", "q4_k_m",
    "q5_0", "q5_1", "q5_k_s", "q5_k_m", "q6_k", "q8_0",
)  # fmt: skip
# Unquantized types: a converter writes them, and the ladder starts from them.
FLOAT_TYPES = ("f16", "bf16", "f32")
ALL_TYPES = LADDER + FLOAT_TYPES
DEFAULT_QUANT = "q4_k_m"

_FILE_TYPE_IDS = {name.lower(): ident for ident, name in FILE_TYPES.items()}


def normalize(quant: str) -> str:
    """`Q4_K_M`, `q4-k-m` and `q4_k_m` are the same type."""
    return quant.strip().lower().replace("-", "_")


def file_type_id(quant: str) -> int:
    """llama.cpp's `llama_ftype` number for a type of the ladder (or f16/bf16/f32)."""
    name = normalize(quant)
    if name not in ALL_TYPES or name not in _FILE_TYPE_IDS:
        raise InvalidRequestError(
            f"{quant!r} is not a type llmedge can produce; choose one of: {', '.join(LADDER)}",
            param="quantization",
        )
    return _FILE_TYPE_IDS[name]


def sort_key(quant: str) -> tuple[int, str]:
    """Order types along the ladder (floats last, unknown names after them)."""
    name = normalize(quant)
    return (ALL_TYPES.index(name) if name in ALL_TYPES else len(ALL_TYPES), name)

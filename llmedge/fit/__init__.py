"""Will it fit? Model shapes (from a GGUF header or a card), the memory they take at a context,
the advice over quantization x context, and the guard that refuses an oversize load."""

from __future__ import annotations

from llmedge.fit.advisor import FitReport, FitRow, advise, check_fits, memory_budget
from llmedge.fit.guard import ensure_fits, shape_of_file
from llmedge.fit.memory import FitOptions, MemoryEstimate, estimate_memory, options_for
from llmedge.fit.shape import ModelShape, shape_from_card, shape_from_header
from llmedge.fit.sources import shapes_for

__all__ = [
    "FitOptions",
    "FitReport",
    "FitRow",
    "MemoryEstimate",
    "ModelShape",
    "advise",
    "check_fits",
    "ensure_fits",
    "estimate_memory",
    "memory_budget",
    "options_for",
    "shape_from_card",
    "shape_from_header",
    "shape_of_file",
    "shapes_for",
]

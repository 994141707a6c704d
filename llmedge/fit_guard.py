"""The load-time guard: refuse a GGUF model that would not fit, with numbers, before loading it.

Without it an oversize model is killed by the OS halfway through loading, or drives the machine
into swap; with it, `serve` and `run` stop with the estimate, the budget and what to try instead.
"""

from __future__ import annotations

from pathlib import Path

from llmedge.backends import LoadOptions
from llmedge.fit import FitOptions, check_fits, gpu_layers_that_fit
from llmedge.fit_shape import ModelShape, shape_from_header
from llmedge.gguf_header import read_gguf_header
from llmedge.hardware import probe_host


def shape_of_file(path: Path, name: str = "") -> ModelShape:
    """The exact shape of a GGUF file, named `name` (default: the file's stem)."""
    return shape_from_header(read_gguf_header(path), name=name or path.stem)


def ensure_fits(path: Path, options: LoadOptions, budget_bytes: int | None, name: str = "") -> None:
    """Raise `InsufficientMemoryError` when the model at `path` would not fit.

    The budget is `budget_bytes` when set, else the RAM available now. With a GPU present and
    layers asked for, the layers that fit in its free memory are left out of the RAM figure.
    """
    shape = shape_of_file(path, name)
    host = probe_host(include_backends=False)
    fit_options = FitOptions(ctx_tokens=options.ctx_tokens, parallel=max(1, options.parallel))
    gpu_layers = 0
    if options.gpu_layers != 0 and host.gpus:
        room = gpu_layers_that_fit(shape, fit_options, host.gpus[0].vram_free_bytes)
        gpu_layers = room if options.gpu_layers < 0 else min(room, options.gpu_layers)
    budget = budget_bytes if budget_bytes is not None else host.available_ram_bytes
    check_fits(shape, fit_options, budget, gpu_layers)

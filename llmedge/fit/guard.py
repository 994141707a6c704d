"""The load-time guard: refuse a GGUF model that would not fit, with numbers, before loading it.

Without it an oversize model is killed by the OS halfway through loading, or drives the machine
into swap; with it, `serve` and `run` stop with the estimate, the budget and what to try instead.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from llmedge.errors import InvalidRequestError
from llmedge.fit.advisor import check_fits, slots_that_fit
from llmedge.fit.memory import FitOptions, gpu_layers_that_fit, kv_type_problem
from llmedge.fit.shape import ModelShape, shape_from_header
from llmedge.gguf import read_model_header
from llmedge.hardware import probe_host


def shape_of_file(path: Path, name: str = "") -> ModelShape:
    """The exact shape of a GGUF file, named `name` (default: the file's stem)."""
    return shape_from_header(read_model_header(path), name=name or path.stem)


@dataclass(frozen=True)
class LoadPlan:
    """What the guard approved, which the load must then use."""

    gpu_layers: int  # layers to offload (as the load asks llama.cpp for them)
    parallel: int  # sequences decoded together


def ensure_fits(
    path: Path,
    options: FitOptions,
    budget_bytes: int | None,
    name: str = "",
    parallel_max: int | None = None,
) -> LoadPlan:
    """Raise `InsufficientMemoryError` when the model at `path` would not fit (and
    `InvalidRequestError` for KV cache types llama.cpp would refuse for it); else return the
    plan the check approved.

    The budget is `budget_bytes` when set, else the RAM available now. With a discrete GPU and
    layers asked for (`options.gpu_layers`, -1: all), only the layers that fit in its free memory
    are offloaded and left out of the RAM figure. Without one the whole model counts against RAM
    and the request passes unchanged (unified memory, or a GPU this probe cannot see). With
    `parallel_max` (`--parallel auto`) the plan has as many sequences as `slots_that_fit`.
    """
    shape = shape_of_file(path, name)
    problem = kv_type_problem(shape, options)
    if problem:
        raise InvalidRequestError(problem, param="model")
    host = probe_host()
    budget = budget_bytes if budget_bytes is not None else host.available_ram_bytes
    if parallel_max is not None:  # sized as if all in RAM; then the GPU takes what fits
        parallel = slots_that_fit(shape, options, budget, 0, parallel_max)
        options = replace(options, parallel=parallel)
    gpu_layers = 0
    if options.gpu_layers != 0 and host.gpus:
        room = gpu_layers_that_fit(shape, options, host.gpus[0].vram_free_bytes)
        gpu_layers = room if options.gpu_layers < 0 else min(room, options.gpu_layers)
    check_fits(shape, options, budget, gpu_layers)
    return LoadPlan(gpu_layers if host.gpus else options.gpu_layers, options.parallel)

"""The memory-fit advisor: which quantization x context fits this host, and which to choose.

Pure functions over frozen dataclasses; probing the host and reading GGUF headers happen before,
in `llmedge.hardware` and `llmedge.fit.shape`; the bytes themselves come from `llmedge.fit.memory`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from llmedge.errors import InsufficientMemoryError
from llmedge.fit.memory import (
    MIB,
    FitOptions,
    MemoryEstimate,
    estimate_memory,
    gpu_layers_that_fit,
)
from llmedge.fit.shape import ModelShape, quant_rank
from llmedge.hardware import HostFacts

# A context is "useful" from this many tokens (or the model's trained context, if shorter).
USEFUL_CTX_TOKENS = 4096
DEFAULT_CTX_LADDER = (1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)


@dataclass(frozen=True)
class FitRow:
    """One quantization at one context: the estimate and whether it fits the budget."""

    quantization: str
    ctx_tokens: int
    exact: bool
    estimate: MemoryEstimate
    budget_bytes: int
    vram_budget_bytes: int = 0

    @property
    def headroom_bytes(self) -> int:
        return self.budget_bytes - self.estimate.ram_bytes

    @property
    def fits(self) -> bool:
        vram_ok = self.estimate.vram_bytes <= self.vram_budget_bytes or not self.estimate.vram_bytes
        return self.headroom_bytes >= 0 and vram_ok


@dataclass(frozen=True)
class FitReport:
    """The table for one model, the recommendation, and the reasons behind it."""

    model: str
    budget_bytes: int
    budget_source: str
    options: FitOptions
    rows: tuple[FitRow, ...]
    recommendation: FitRow | None
    reasons: tuple[str, ...] = field(default=())


def memory_budget(
    host: HostFacts, budget_bytes: int | None, offload: bool = False
) -> tuple[int, str]:
    """The bytes a model may use on this host, and where that figure comes from."""
    if budget_bytes is not None:
        return budget_bytes, "--budget"
    if offload and host.apple:
        # Metal allocates every model buffer in unified memory, up to its working set.
        working_set = host.apple.recommended_working_set_bytes
        if working_set < host.available_ram_bytes:
            return working_set, "Metal's recommended working set"
    return host.available_ram_bytes, "available RAM"


def plan(
    shape: ModelShape, options: FitOptions, host: HostFacts, budget_bytes: int, offload: bool
) -> FitRow:
    """Estimate one shape on this host, choosing GPU layers when offload is possible."""
    vram_free = sum(gpu.vram_free_bytes for gpu in host.gpus[:1])
    layers = 0
    if offload and vram_free:
        room = gpu_layers_that_fit(shape, options, vram_free)
        layers = room if options.gpu_layers < 0 else min(options.gpu_layers, shape.n_layers + 1)
    estimate = estimate_memory(shape, options, layers)
    return FitRow(
        shape.quantization, options.ctx_tokens, shape.exact, estimate, budget_bytes, vram_free
    )


def context_ladder(shape: ModelShape, wanted: Sequence[int] = ()) -> list[int]:
    """The contexts to tabulate: those asked for, else powers of two up to the trained context."""
    limit = shape.ctx_train_tokens or max(DEFAULT_CTX_LADDER)
    if wanted:
        return sorted({min(ctx, limit) for ctx in wanted})
    ladder = [ctx for ctx in DEFAULT_CTX_LADDER if ctx <= limit]
    return ladder if ladder and ladder[-1] == limit else [*ladder, limit]


def advise(
    shapes: Sequence[ModelShape],
    host: HostFacts,
    options: FitOptions,
    *,
    contexts: Sequence[int] = (),
    budget_bytes: int | None = None,
    offload: bool = False,
) -> FitReport:
    """The table of quantization x context for one model, and which to choose."""
    if not shapes:
        raise ValueError("advise needs at least one model shape")
    budget, source = memory_budget(host, budget_bytes, offload)
    ordered = sorted(shapes, key=lambda s: (-quant_rank(s.quantization), s.quantization))
    rows = tuple(
        plan(shape, replace(options, ctx_tokens=ctx), host, budget, offload)
        for shape in ordered
        for ctx in context_ladder(shape, contexts)
    )
    recommendation, reasons = _recommend(ordered, rows, budget, source, options)
    return FitReport(ordered[0].name, budget, source, options, rows, recommendation, reasons)


def _recommend(
    shapes: Sequence[ModelShape],
    rows: Sequence[FitRow],
    budget: int,
    source: str,
    options: FitOptions,
) -> tuple[FitRow | None, tuple[str, ...]]:
    """The best-quality quantization that fits with a useful context, at its longest context."""
    reasons = [f"budget {budget / MIB:,.0f} MiB ({source})"]
    fitting = [row for row in rows if row.fits]
    if not fitting:
        smallest = min(rows, key=lambda r: r.estimate.ram_bytes)
        reasons.append(
            f"nothing fits: the smallest, {smallest.quantization} at {smallest.ctx_tokens} "
            f"tokens, needs {smallest.estimate.ram_bytes / MIB:,.0f} MiB"
        )
        hints = ["--parallel 1 (one KV cache, not several)"] if options.parallel > 1 else []
        hints += ["--kv-type q8_0 (half the KV cache)"] if options.kv_type == "f16" else []
        hints += ["a smaller model, free memory, or a larger --budget"]
        reasons.append("try " + "; ".join(hints))
        return None, tuple(reasons)
    for shape in shapes:
        useful = min(USEFUL_CTX_TOKENS, shape.ctx_train_tokens or USEFUL_CTX_TOKENS)
        mine = [r for r in fitting if r.quantization == shape.quantization]
        if mine and max(r.ctx_tokens for r in mine) >= useful:
            best = max(mine, key=lambda r: r.ctx_tokens)
            reasons.append(
                f"{best.quantization} is the best-quality quantization that fits a useful "
                f"context (>= {useful} tokens); its longest fitting context is "
                f"{best.ctx_tokens} tokens with {best.headroom_bytes / MIB:,.0f} MiB to spare"
            )
            return best, tuple(reasons)
        if mine:
            reasons.append(
                f"{shape.quantization} fits only up to {max(r.ctx_tokens for r in mine)} tokens"
            )
        else:
            reasons.append(f"{shape.quantization} does not fit at any context tried")
    best = max(fitting, key=lambda r: (r.ctx_tokens, quant_rank(r.quantization)))
    reasons.append(f"no quantization fits {USEFUL_CTX_TOKENS} tokens; taking the longest that fits")
    return best, tuple(reasons)


def check_fits(
    shape: ModelShape, options: FitOptions, budget_bytes: int, gpu_layers: int = 0
) -> MemoryEstimate:
    """The estimate, or `InsufficientMemoryError` with the numbers and what to try instead."""
    estimate = estimate_memory(shape, options, gpu_layers)
    if estimate.ram_bytes <= budget_bytes:
        return estimate
    suggestion = _suggest(shape, options, budget_bytes, gpu_layers)
    raise InsufficientMemoryError(estimate.ram_bytes, budget_bytes, suggestion)


def _suggest(shape: ModelShape, options: FitOptions, budget_bytes: int, gpu_layers: int) -> str:
    """What would make it fit: a shorter context, or else a smaller quantization or model."""
    ctx = options.ctx_tokens
    while ctx > 512:
        ctx //= 2
        smaller = replace(options, ctx_tokens=ctx)
        if estimate_memory(shape, smaller, gpu_layers).ram_bytes <= budget_bytes:
            return (
                f"try a shorter context (--ctx {ctx} fits), run `llmedge fit {shape.name}` "
                "for the options, or set LLMEDGE_MEMORY_BUDGET_BYTES if you know better"
            )
    return (
        f"the weights alone take {shape.weight_bytes / MIB:,.0f} MiB; pick a smaller "
        f"quantization or model (see `llmedge fit {shape.name}`), or free memory"
    )

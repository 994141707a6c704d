"""The fit advisor: which quantization x context fits this host, how fast, and which to choose.

Pure functions over frozen dataclasses; probing the host and reading GGUF headers happen before,
in `llmedge.hardware` and `llmedge.fit.shape`; the bytes come from `llmedge.fit.memory`, the
tokens/s from `llmedge.fit.speed`. The recommendation is the best quality that fits a useful
context and decodes at a usable speed.
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
from llmedge.fit.speed import SpeedEstimate, estimate_speed
from llmedge.hardware import HostFacts

# A context is "useful" from this many tokens (or the model's trained context, if shorter).
USEFUL_CTX_TOKENS = 4096
# A usable speed: one stream, at the end of a full context, decodes at least this fast.
MIN_SPEED_TOKENS_PER_S = 10.0
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
    speed: SpeedEstimate | None = None  # None: offloaded to a GPU, or bandwidth not measured

    @property
    def headroom_bytes(self) -> int:
        return self.budget_bytes - self.estimate.ram_bytes

    @property
    def fits(self) -> bool:
        vram_ok = self.estimate.vram_bytes <= self.vram_budget_bytes or not self.estimate.vram_bytes
        return self.headroom_bytes >= 0 and vram_ok

    def fast_enough(self, min_tokens_per_s: float) -> bool:
        """Whether one stream decodes at `min_tokens_per_s` to the end of the context (a row
        whose speed is unknown passes: there is nothing to hold against it)."""
        return self.speed is None or self.speed.decode_full_tokens_per_s >= min_tokens_per_s


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
    min_speed_tokens_per_s: float = MIN_SPEED_TOKENS_PER_S


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
    # The CPU model only: what a GPU decodes at is not measured here.
    speed = None if estimate.vram_bytes else estimate_speed(shape, options, host, estimate.kv_bytes)
    return FitRow(
        shape.quantization,
        options.ctx_tokens,
        shape.exact,
        estimate,
        budget_bytes,
        vram_free,
        speed,
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
    min_speed_tokens_per_s: float = MIN_SPEED_TOKENS_PER_S,
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
    wanted = Wanted(budget, source, options, min_speed_tokens_per_s)
    recommendation, reasons = _recommend(ordered, rows, wanted)
    return FitReport(
        ordered[0].name,
        budget,
        source,
        options,
        rows,
        recommendation,
        reasons,
        min_speed_tokens_per_s,
    )


@dataclass(frozen=True)
class Wanted:
    """What the recommendation must meet: the budget (and its source), options, least speed."""

    budget_bytes: int
    source: str
    options: FitOptions
    min_tokens_per_s: float


def _speed_text(row: FitRow) -> str:
    assert row.speed is not None
    return (
        f"{row.speed.decode_full_tokens_per_s:.1f} tokens/s at the end of {row.ctx_tokens} "
        f"tokens ({row.speed.decode_tokens_per_s:.1f} at the start; {row.speed.bound}-bound)"
    )


def _recommend(
    shapes: Sequence[ModelShape], rows: Sequence[FitRow], wanted: Wanted
) -> tuple[FitRow | None, tuple[str, ...]]:
    """The best-quality quantization that fits a useful context and decodes at a usable speed,
    at the longest context that keeps both; failing that, the nearest thing, saying why."""
    reasons = [f"budget {wanted.budget_bytes / MIB:,.0f} MiB ({wanted.source})"]
    fitting = [row for row in rows if row.fits]
    if not fitting:
        return None, (*reasons, *_nothing_fits(rows, wanted.options))
    least = wanted.min_tokens_per_s
    if all(row.speed is None for row in fitting):
        reasons.append("speed not predicted (no bandwidth measured, or layers on a GPU)")
    fast = [row for row in fitting if row.fast_enough(least)]
    for shape in shapes:
        useful = min(USEFUL_CTX_TOKENS, shape.ctx_train_tokens or USEFUL_CTX_TOKENS)
        fits = [r for r in fitting if r.quantization == shape.quantization]
        mine = [r for r in fast if r.quantization == shape.quantization]
        if mine and max(r.ctx_tokens for r in mine) >= useful:
            best = max(mine, key=lambda r: r.ctx_tokens)
            reasons.append(
                f"{best.quantization} is the best-quality quantization that fits a useful "
                f"context (>= {useful} tokens)"
                + (f" at >= {least:g} tokens/s" if best.speed else "")
                + f"; its longest such context is {best.ctx_tokens} tokens with "
                f"{best.headroom_bytes / MIB:,.0f} MiB to spare"
                + (f", decoding at {_speed_text(best)}" if best.speed else "")
            )
            return best, tuple(reasons)
        useful_fits = [r for r in fits if r.ctx_tokens >= useful]
        if useful_fits and not any(r.ctx_tokens >= useful for r in mine):
            shortest = min(useful_fits, key=lambda r: r.ctx_tokens)  # the fastest of them
            reasons.append(f"{shape.quantization} fits but is too slow: {_speed_text(shortest)}")
        elif fits:
            reasons.append(
                f"{shape.quantization} fits only up to {max(r.ctx_tokens for r in fits)} tokens"
            )
        else:
            reasons.append(f"{shape.quantization} does not fit at any context tried")
    if fast:
        best = max(fast, key=lambda r: (r.ctx_tokens, quant_rank(r.quantization)))
        reasons.append(
            f"no quantization fits {USEFUL_CTX_TOKENS} tokens at a usable speed; taking the "
            "longest context that fits" + (f" at >= {least:g} tokens/s" if best.speed else "")
        )
        return best, tuple(reasons)
    best = max(fitting, key=lambda r: (r.ctx_tokens >= USEFUL_CTX_TOKENS, _full_speed(r)))
    reasons.append(
        f"nothing that fits reaches {least:g} tokens/s here; the fastest is {best.quantization}"
        f" at {_speed_text(best)}: try a smaller model, fewer parallel sequences, or "
        f"--min-speed {max(1, int(_full_speed(best)))} to accept it"
    )
    return best, tuple(reasons)


def _full_speed(row: FitRow) -> float:
    return row.speed.decode_full_tokens_per_s if row.speed else 0.0


def _nothing_fits(rows: Sequence[FitRow], options: FitOptions) -> list[str]:
    """Why nothing fits, and the flags (of `serve` and `fit` alike) that would shrink it."""
    smallest = min(rows, key=lambda r: r.estimate.ram_bytes)
    hints = ["--parallel 1 (one KV cache, not several)"] if options.parallel > 1 else []
    if options.kv_type_k == "f16" or options.kv_type_v == "f16":
        flash = "" if options.flash_attn else " --flash-attn auto"
        hints.append(f"--kv-type q8_0{flash} (half the KV cache)")
    elif options.kv_type != "q4_0":
        hints.append("--kv-type q4_0 (a quarter of the f16 KV cache)")
    hints.append("a smaller model, free memory, or a larger --budget")
    return [
        f"nothing fits: the smallest, {smallest.quantization} at {smallest.ctx_tokens} "
        f"tokens, needs {smallest.estimate.ram_bytes / MIB:,.0f} MiB",
        "try " + "; ".join(hints),
    ]


def check_fits(
    shape: ModelShape, options: FitOptions, budget_bytes: int, gpu_layers: int = 0
) -> MemoryEstimate:
    """The estimate, or `InsufficientMemoryError` with the numbers and what to try instead."""
    estimate = estimate_memory(shape, options, gpu_layers)
    if estimate.ram_bytes <= budget_bytes:
        return estimate
    suggestion = _suggest(shape, options, budget_bytes, gpu_layers)
    raise InsufficientMemoryError(estimate.ram_bytes, budget_bytes, suggestion)


def slots_that_fit(
    shape: ModelShape, options: FitOptions, budget_bytes: int, gpu_layers: int, most: int
) -> int:
    """Sequences for `--parallel auto`: the most, halving from `most`, whose memory beyond a
    single sequence's takes at most half of what the budget leaves beside that single one (so
    slots never crowd out the rest of the machine); 1 when none do."""
    one = estimate_memory(shape, replace(options, parallel=1), gpu_layers).ram_bytes
    spare = (budget_bytes - one) // 2
    n = most
    while n > 1:
        more = estimate_memory(shape, replace(options, parallel=n), gpu_layers).ram_bytes - one
        if more <= spare:
            return n
        n //= 2
    return 1


def _suggest(shape: ModelShape, options: FitOptions, budget_bytes: int, gpu_layers: int) -> str:
    """What would make it fit: a smaller KV cache type or a shorter context, or else a smaller
    quantization or model."""

    def fits(changed: FitOptions) -> bool:
        return estimate_memory(shape, changed, gpu_layers).ram_bytes <= budget_bytes

    hints = []
    quantized = replace(options, kv_type_k="q8_0", kv_type_v="q8_0")
    if options.kv_type == "f16" and options.flash_attn and fits(quantized):
        hints.append("--kv-type q8_0 (half the KV cache: it fits)")
    ctx = options.ctx_tokens
    while ctx > 512:
        ctx //= 2
        if fits(replace(options, ctx_tokens=ctx)):
            hints.append(f"a shorter context (--ctx {ctx} fits)")
            break
    if hints:
        return (
            f"try {' or '.join(hints)}, run `llmedge fit {shape.name}` for the options, or set "
            "LLMEDGE_MEMORY_BUDGET_BYTES if you know better"
        )
    return (
        f"the weights alone take {shape.weight_bytes / MIB:,.0f} MiB; pick a smaller "
        f"quantization or model (see `llmedge fit {shape.name}`), or free memory"
    )

"""The memory-fit advisor: model shape + host + options -> how much memory, and whether it fits.

Pure functions over frozen dataclasses; probing the host and reading GGUF headers happen before,
in `llmedge.hardware` and `llmedge.fit_shape`. The estimate follows what llama.cpp (through
llama-cpp-python, mmap off) actually touches, component by component:

- weights: every tensor's stored bytes, exactly as the GGUF tensor table gives them;
- KV cache: cells (context padded to 256, times parallel sequences) x per-layer K and V rows in
  the cache type's exact row size (q8_0: 34 bytes per 32 values), with grouped-query heads and
  sliding-window layers sized to their window unless the cache is full-size;
- compute: the largest decode step, a full batch attending over the whole context: the f32
  attention scores plus the f16 copy the CPU makes of them (flash attention avoids both), the
  attention masks, and per-token activations;
- output: one row of logits per sequence;
- overhead: the runtime's own structures (vocabulary, graphs, threads).

The constants below were fitted to peak RSS measured by `scripts/fit_accuracy.py`; its table is
committed in tests/data and a test keeps these predictions within the issue's targets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from llmedge.errors import InsufficientMemoryError
from llmedge.fit_shape import ModelShape, quant_rank
from llmedge.ggml_types import row_nbytes
from llmedge.hardware import HostFacts

MIB = 1 << 20
KV_TYPES = ("f16", "q8_0", "q4_0")
KV_PAD_CELLS = 256  # llama.cpp pads the context (and each window) to this many cells
# Compute buffer, per batch token: bytes per attention score (f32 scores + f16 copy for the
# V product), per mask cell (f32, plus an f16 copy with flash attention), and activations.
SCORE_BYTES = 6
MASK_BYTES = 4
MASK_BYTES_FLASH = 4
FLASH_OUTPUT_COPIES = 3  # f32 Q/output rows per head dimension with flash attention
ACTIVATION_FF_BYTES = 3  # feed-forward rows live while attention's buffers are freed
ACTIVATION_EMBD_BYTES = 3  # the residual stream and its normalized copy
# The runtime's own memory: a fixed part, and the tokenizer's tables per vocabulary entry.
OVERHEAD_BYTES = 18 * MIB
OVERHEAD_PER_VOCAB_BYTES = 148
# GPU offload is estimated, not measured here: the CUDA/Metal context and its host libraries.
GPU_CONTEXT_BYTES = 400 * MIB
GPU_HOST_LIBRARY_BYTES = 300 * MIB
VRAM_RESERVE_FRACTION = 0.05
# A context is "useful" from this many tokens (or the model's trained context, if shorter).
USEFUL_CTX_TOKENS = 4096
DEFAULT_CTX_LADDER = (1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)


@dataclass(frozen=True)
class FitOptions:
    """How the model would be run: context, batch, KV cache type, parallel sequences, offload."""

    ctx_tokens: int = 4096
    batch_tokens: int = 512  # llama.cpp's n_ubatch: tokens decoded in one step
    kv_type: str = "f16"
    parallel: int = 1
    gpu_layers: int = -1  # -1: as many as fit in free VRAM; 0: CPU only
    # llama.cpp's default ("auto") turns flash attention on wherever the device supports it, as
    # CPU, CUDA and Metal do; a quantized KV cache requires it.
    flash_attn: bool = True
    # llama-cpp-python keeps a full-size cache for sliding-window layers (so prompts can be
    # reused); False sizes those layers to their window, as llama.cpp's server does.
    swa_full: bool = True

    def __post_init__(self) -> None:
        if self.kv_type not in KV_TYPES:
            raise ValueError(f"kv_type {self.kv_type!r}: choose one of {', '.join(KV_TYPES)}")
        if self.ctx_tokens < 1 or self.batch_tokens < 1 or self.parallel < 1:
            raise ValueError("ctx_tokens, batch_tokens and parallel must be at least 1")
        if self.kv_type != "f16" and not self.flash_attn:
            raise ValueError("a quantized KV cache needs flash attention (llama.cpp refuses)")


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one model needs, by component; `ram_bytes` on the host, `vram_bytes` on the GPU."""

    weights_bytes: int
    kv_bytes: int
    compute_bytes: int
    output_bytes: int
    overhead_bytes: int
    kv_cells: int
    gpu_layers: int = 0
    vram_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        """Everything, wherever it lives."""
        return (
            self.weights_bytes
            + self.kv_bytes
            + self.compute_bytes
            + self.output_bytes
            + self.overhead_bytes
        )

    @property
    def ram_bytes(self) -> int:
        return self.total_bytes - self.vram_bytes


def _pad(n: int, to: int = KV_PAD_CELLS) -> int:
    return -(-n // to) * to


def kv_cells(shape: ModelShape, options: FitOptions) -> tuple[int, int]:
    """Cells per sequence in the global and the sliding-window caches.

    Each parallel sequence has its own cache (llama.cpp's non-unified KV), so a decode step
    attends over one sequence's cells, while the memory holds `parallel` of them.
    """
    cells = _pad(options.ctx_tokens)
    if options.swa_full or not any(shape.swa_layers):
        return cells, cells
    return cells, min(cells, _pad((shape.sliding_window or 0) + options.batch_tokens))


def kv_layer_bytes(shape: ModelShape, options: FitOptions) -> list[int]:
    """Each layer's K and V cache bytes, over all parallel sequences."""
    global_cells, swa_cells = kv_cells(shape, options)
    sizes = []
    for il, heads in enumerate(shape.n_kv_heads):
        cells = swa_cells if shape.swa_layers[il] else global_cells
        row = row_nbytes(options.kv_type, heads * shape.head_dim_k)
        row += row_nbytes(options.kv_type, heads * shape.head_dim_v)
        sizes.append(cells * row * options.parallel)
    return sizes


def compute_bytes(shape: ModelShape, options: FitOptions) -> int:
    """The compute buffer a full batch at the end of a full context touches."""
    global_cells, swa_cells = kv_cells(shape, options)
    tokens = min(options.batch_tokens, global_cells)
    # One mask per attention kind (global, sliding-window), alive for the whole step.
    kinds = [global_cells] + ([swa_cells] if any(shape.swa_layers) else [])
    per_token = ACTIVATION_FF_BYTES * shape.n_ff + ACTIVATION_EMBD_BYTES * shape.n_embd
    if shape.n_experts_used:
        # Routed experts each compute their own gate/up rows, plus the router's logits.
        per_token += ACTIVATION_FF_BYTES * shape.n_ff * (shape.n_experts_used - 1)
        per_token += 4 * shape.n_experts
    if options.flash_attn:
        per_token += MASK_BYTES_FLASH * sum(kinds)
        per_token += FLASH_OUTPUT_COPIES * 4 * shape.n_heads * shape.head_dim_v
    else:
        per_token += MASK_BYTES * sum(kinds) + SCORE_BYTES * shape.n_heads * max(kinds)
    return tokens * per_token


def estimate_memory(shape: ModelShape, options: FitOptions, gpu_layers: int = 0) -> MemoryEstimate:
    """The memory `shape` needs when run with `options`, the last `gpu_layers` on a GPU."""
    kv_layers = kv_layer_bytes(shape, options)
    gpu_blocks = max(0, min(gpu_layers, shape.n_layers))
    output_on_gpu = gpu_layers > shape.n_layers
    compute = compute_bytes(shape, options)
    output = 4 * shape.vocab_size * options.parallel
    overhead = OVERHEAD_BYTES + OVERHEAD_PER_VOCAB_BYTES * shape.vocab_size
    cells = kv_cells(shape, options)[0]
    vram = 0
    if gpu_blocks:
        offloaded = range(shape.n_layers - gpu_blocks, shape.n_layers)
        vram = sum(shape.layer_weight_bytes[i] + kv_layers[i] for i in offloaded)
        vram += shape.output_weight_bytes if output_on_gpu else 0
        # The GPU reserves its whole graph, logits for every batch token included.
        compute += 4 * shape.vocab_size * min(options.batch_tokens, cells)
        vram += compute + GPU_CONTEXT_BYTES
        overhead += GPU_HOST_LIBRARY_BYTES + GPU_CONTEXT_BYTES
    return MemoryEstimate(
        weights_bytes=shape.weight_bytes,
        kv_bytes=sum(kv_layers),
        compute_bytes=compute,
        output_bytes=output,
        overhead_bytes=overhead,
        kv_cells=cells * options.parallel,
        gpu_layers=gpu_blocks + int(output_on_gpu),
        vram_bytes=vram,
    )


def gpu_layers_that_fit(shape: ModelShape, options: FitOptions, vram_free_bytes: int) -> int:
    """The most layers (the output layer counting as one more) whose memory fits in free VRAM."""
    room = vram_free_bytes * (1 - VRAM_RESERVE_FRACTION)
    best = 0
    for layers in range(1, shape.n_layers + 2):
        if estimate_memory(shape, options, layers).vram_bytes > room:
            break
        best = layers
    return best


# --- the advice ------------------------------------------------------------------------------


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

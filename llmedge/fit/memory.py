"""The memory estimate: model shape + options -> the bytes llama.cpp will use, part by part.

Pure functions over frozen dataclasses; reading GGUF headers happens before, in
`llmedge.fit.shape`. The estimate follows what llama.cpp (through
llama-cpp-python, mmap off) actually touches, component by component:

- weights: every tensor's stored bytes, exactly as the GGUF tensor table gives them;
- KV cache: cells (context padded to 256, times parallel sequences) x per-layer K and V rows in
  the cache type's exact row size (q8_0: 34 bytes per 32 values), with grouped-query heads and
  sliding-window layers sized to their window unless the cache is full-size;
- compute: the largest decode step, a full batch attending over the whole context: the f32
  attention scores plus the f16 copy the CPU makes of them (flash attention avoids both), the
  attention masks, and per-token activations;
- output: one row of logits per sequence;
- overhead: the runtime's own structures (vocabulary, graphs, threads);
- process: the serving process itself (interpreter, libraries, server) before any model, which
  `llmedge.hardware.process` measures per install, and what serving the model adds to it;
  zero for a model loaded into a running process.

The constants below were fitted to peak RSS measured by `scripts/fit_accuracy.py`; its table is
committed in tests/data and a test keeps these predictions within the issue's targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmedge.fit.shape import ModelShape
from llmedge.gguf.ggml_types import row_nbytes
from llmedge.settings import KV_TYPES, Settings, flash_attention_problem

MIB = 1 << 20
KV_BLOCK_VALUES = 32  # q8_0 and q4_0 store blocks of 32 values: a head must be whole blocks
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
# What serving adds to the serve process measured before any model (fitted on the 2k and 4k
# serve points): handling requests, and the GGUF header that the load-time check reads in
# Python, its vocabulary as strings.
SERVE_BYTES = 3 * MIB
SERVE_PER_VOCAB_BYTES = 48
# GPU offload is estimated, not measured here: the CUDA/Metal context and its host libraries.
GPU_CONTEXT_BYTES = 400 * MIB
GPU_HOST_LIBRARY_BYTES = 300 * MIB
VRAM_RESERVE_FRACTION = 0.05


@dataclass(frozen=True)
class FitOptions:
    """How the model would be run: context, batch, KV cache types, parallel sequences, offload,
    and in what process."""

    ctx_tokens: int = 4096
    batch_tokens: int = 512  # llama.cpp's n_ubatch: tokens decoded in one step
    kv_type_k: str = "f16"
    kv_type_v: str = "f16"
    parallel: int = 1
    gpu_layers: int = -1  # -1: as many as fit in free VRAM; 0: CPU only
    # llama.cpp's default ("auto") turns flash attention on wherever the device supports it, as
    # CPU, CUDA and Metal do; a quantized KV cache requires it.
    flash_attn: bool = True
    # llama-cpp-python keeps a full-size cache for sliding-window layers (so prompts can be
    # reused); False sizes those layers to their window, as llama.cpp's server does.
    swa_full: bool = True
    # The process the model runs in, before the model: a fresh `serve` counts it, a model
    # loaded into a running process does not (its memory is already spent).
    process_bytes: int = 0
    threads: int = 0  # decoding threads, for the speed estimate (0: every usable core)

    def __post_init__(self) -> None:
        for kind in (self.kv_type_k, self.kv_type_v):
            if kind not in KV_TYPES:
                raise ValueError(f"KV cache type {kind!r}: choose one of {', '.join(KV_TYPES)}")
        if self.ctx_tokens < 1 or self.batch_tokens < 1 or self.parallel < 1:
            raise ValueError("ctx_tokens, batch_tokens and parallel must be at least 1")
        if self.process_bytes < 0 or self.threads < 0:
            raise ValueError("process_bytes and threads cannot be negative")
        problem = flash_attention_problem(self.kv_type_v, "on" if self.flash_attn else "off")
        if problem:
            raise ValueError(problem)

    @property
    def kv_type(self) -> str:
        """The cache types as the --kv-type flag writes them: `q8_0`, or `q8_0,f16` (K,V)."""
        k, v = self.kv_type_k, self.kv_type_v
        return k if k == v else f"{k},{v}"


def options_for(settings: Settings, **overrides: Any) -> FitOptions:
    """The options a model is run with under `settings` (context, parallel sequences, KV cache
    types, flash attention, threads, GPU layers), with `overrides` on top. `--parallel auto`
    counts one sequence here, the least it runs with (`slots_that_fit` chooses more)."""
    kv_k, kv_v = settings.kv_types
    values: dict[str, Any] = {
        "ctx_tokens": settings.ctx_tokens,
        "parallel": settings.least_parallel,
        "kv_type_k": kv_k,
        "kv_type_v": kv_v,
        "flash_attn": settings.flash_attn != "off",
        "threads": settings.threads,
        "gpu_layers": settings.gpu_layers,
    }
    return FitOptions(**{**values, **overrides})


def kv_type_problem(shape: ModelShape, options: FitOptions) -> str | None:
    """Why llama.cpp would refuse this model's KV cache types: a quantized cache stores blocks of
    32 values, and flash attention needs every head to be whole blocks."""
    for side, kind, head_dim in (
        ("K", options.kv_type_k, shape.head_dim_k),
        ("V", options.kv_type_v, shape.head_dim_v),
    ):
        if kind != "f16" and options.flash_attn and head_dim % KV_BLOCK_VALUES:
            return (
                f"{shape.name} has {head_dim}-value {side} heads, which a {kind} cache cannot "
                f"hold in blocks of {KV_BLOCK_VALUES}; use --kv-type f16 for {side}"
            )
    return None


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
    process_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        """Everything, wherever it lives."""
        return (
            self.weights_bytes
            + self.kv_bytes
            + self.compute_bytes
            + self.output_bytes
            + self.overhead_bytes
            + self.process_bytes
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
        row = row_nbytes(options.kv_type_k, heads * shape.head_dim_k)
        row += row_nbytes(options.kv_type_v, heads * shape.head_dim_v)
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
        process_bytes=serving_bytes(shape, options),
    )


def serving_bytes(shape: ModelShape, options: FitOptions) -> int:
    """The serve process's own memory with this model in it (0 where none is counted)."""
    if not options.process_bytes:
        return 0
    return options.process_bytes + SERVE_BYTES + SERVE_PER_VOCAB_BYTES * shape.vocab_size


def gpu_layers_that_fit(shape: ModelShape, options: FitOptions, vram_free_bytes: int) -> int:
    """The most layers (the output layer counting as one more) whose memory fits in free VRAM."""
    room = vram_free_bytes * (1 - VRAM_RESERVE_FRACTION)
    best = 0
    for layers in range(1, shape.n_layers + 2):
        if estimate_memory(shape, options, layers).vram_bytes > room:
            break
        best = layers
    return best

"""The speed estimate: model shape + options + host -> decode and prompt tokens/s on the CPU.

A pure function over frozen dataclasses, like the memory estimate; the host's bandwidth was
measured before, by `llmedge.hardware.bandwidth`. Decoding one token is one pass over the
weights, so a step takes the longer of two times, half the shorter (they overlap only in
part), and a fixed cost:

- memory: the bytes the step reads (every layer's weights, the output matrix, and each stream's
  K and V rows up to its position) over the bandwidth measured for a working set that size;
- compute: the weights' multiply-adds, at a per-core rate that depends on the SIMD the CPU has
  and on how much unpacking the weight type needs (4-bit blocks cost more per weight than f16);
- fixed: building and scheduling the step's graph and sampling from the vocabulary's logits.

Prompt evaluation is compute-bound: a batch of tokens shares each weight read. The constants
below were fitted to llama-bench runs on a 2-core AVX512 host (`scripts/fit_speed.py` prints
predicted vs measured; tests/data/fit_speed.json keeps them within +-25 %).
"""

from __future__ import annotations

from dataclasses import dataclass

from llmedge.fit.memory import FitOptions, kv_cells
from llmedge.fit.shape import ModelShape
from llmedge.gguf.ggml_types import row_nbytes
from llmedge.hardware import HostFacts

# Weights one core multiplies per cycle, by the widest SIMD family the CPU has: one token
# against a matrix (decode) and a batch of them (prompt), for 4- and 8-bit blocks. Fitted on an
# AVX512 host; the other families are guesses from llama.cpp's kernels for them, unverified.
DECODE_WEIGHTS_PER_CYCLE = {"AVX512": 3.3, "AVX2": 2.5, "AVX": 1.2, "NEON": 2.0, "": 0.5}
PROMPT_WEIGHTS_PER_CYCLE = {"AVX512": 7.0, "AVX2": 5.0, "AVX": 2.0, "NEON": 4.0, "": 1.0}
DEFAULT_MHZ = 3000.0  # where the clock is not reported (Apple Silicon)
# Relative cost per weight (decode, prompt) by kind of weight type: unpacking and scaling the
# blocks; llama.cpp repacks q8_0 and q4_0 for its batched kernels, which halves their cost.
KIND_COSTS = {
    "float": (0.8, 0.8),
    "q8_0": (1.0, 0.5),
    "q4_0": (1.0, 0.5),
    "legacy": (1.0, 1.0),
    "k": (1.1, 1.0),
    "iq": (1.6, 1.5),
}
# One decoding thread keeps more reads in flight than the probe's scan does: it reads this much
# faster than the probe's one-thread figure.
ONE_THREAD_READ_FACTOR = 1.5
# Reading and multiplying overlap only in part: this share of the shorter of the two adds to
# the longer (fitted with the per-cycle rates above; the error grew with the weights' bytes).
UNOVERLAPPED_SHARE = 0.5
# The step's fixed cost: building and scheduling its graph, per layer; and the sampler's pass
# over every logit of the vocabulary.
# Several streams decoding together share each weight read, and their products run in batched
# kernels: per token, the cost moves from decode's towards a prompt's, halfway at this many more
# streams (modelled from the two measured ends, not measured itself).
BATCH_HALF_STREAMS = 8
STEP_FIXED_S = 200e-6
STEP_PER_LAYER_S = 36e-6
SAMPLE_PER_VOCAB_S = 2e-9


@dataclass(frozen=True)
class SpeedEstimate:
    """Predicted tokens/s of one model, run with one set of options, on one host."""

    decode_tokens_per_s: float  # one stream at the start of its context (llama-bench's tg)
    decode_full_tokens_per_s: float  # one stream at the end of a full context
    parallel_tokens_per_s: float  # every sequence decoding at once, contexts half full
    prompt_tokens_per_s: float  # prompt evaluation in full batches
    bound: str  # what limits one stream's decoding: "memory" or "compute"
    threads: int
    bandwidth_bytes_per_s: float  # read bandwidth at the model's working set


def weight_kind(type_name: str) -> str:
    """The family of a ggml type or quantization name, which sets its cost per weight."""
    name = type_name.lower()
    if name in ("f32", "f16", "bf16"):
        return "float"
    if name in ("q8_0", "q4_0"):
        return name
    if name.startswith("iq"):
        return "iq"
    return "k" if "_k" in name else "legacy"


def decode_weights(shape: ModelShape) -> tuple[tuple[str, int], ...]:
    """The (type, values) a decode step multiplies: from the file, else the card's estimate."""
    return shape.decode_weights or ((shape.quantization, matmul_weights(shape)),)


def simd_class(simd: tuple[str, ...]) -> str:
    """The widest SIMD family among a host's features, as the rate tables name them."""
    for kind in ("AVX512", "AVX2", "AVX", "NEON"):
        if kind in simd:
            return kind
    return ""


def _layer_weights(shape: ModelShape) -> tuple[int, int]:
    """One layer's attention weights and one expert's (or the) feed-forward weights."""
    attention = shape.n_embd * shape.n_heads * (shape.head_dim_k + shape.head_dim_v)
    attention += 2 * shape.n_embd * max(shape.n_kv_heads, default=0) * shape.head_dim_k
    return attention, 3 * shape.n_embd * shape.n_ff


def decode_read_bytes(shape: ModelShape) -> int:
    """Weight bytes one decode step reads: every layer, the output matrix (the token
    embeddings, when tied) and, of untied embeddings, only the tokens' rows."""
    read = sum(shape.layer_weight_bytes) + shape.output_weight_bytes
    if shape.n_experts and shape.n_experts_used:
        # Only the routed experts' feed-forward weights are read; attention is shared.
        attention, expert = _layer_weights(shape)
        ffn = expert * shape.n_experts
        share = ffn / (ffn + attention) if ffn + attention else 0.0
        read = int(read * (1 - share + share * shape.n_experts_used / shape.n_experts))
    return read + (shape.other_weight_bytes if shape.tied_embeddings else 0)


def matmul_weights(shape: ModelShape) -> int:
    """Weights that take part in one token's matrix products (its multiply-adds)."""
    attention, expert = _layer_weights(shape)
    per_layer = attention + expert * (shape.n_experts_used or 1)
    return shape.n_layers * per_layer + shape.vocab_size * shape.n_embd


def _attended(shape: ModelShape, layer: int, position: int) -> int:
    """Cells a layer attends over at `position`: all of them, or its sliding window."""
    if shape.swa_layers[layer] and shape.sliding_window:
        return min(position, shape.sliding_window)
    return position


def kv_read_bytes(shape: ModelShape, options: FitOptions, position: int) -> int:
    """K and V bytes one stream's attention reads at `position` (windowed layers: the window)."""
    total = 0
    for il, heads in enumerate(shape.n_kv_heads):
        row = row_nbytes(options.kv_type_k, heads * shape.head_dim_k)
        row += row_nbytes(options.kv_type_v, heads * shape.head_dim_v)
        total += _attended(shape, il, position) * row
    return total


def attention_macs(shape: ModelShape, position: int) -> int:
    """Multiply-adds of one token's attention at `position`: every query head against every
    attended cell's K, then V (grouped heads share the rows, not the arithmetic)."""
    per_cell = shape.n_heads * (shape.head_dim_k + shape.head_dim_v)
    layers = (il for il, heads in enumerate(shape.n_kv_heads) if heads)
    return sum(per_cell * _attended(shape, il, position) for il in layers)


def _threads(host: HostFacts, options: FitOptions) -> int:
    cores = max(1, host.usable_cores)
    return min(options.threads, cores) if options.threads else cores


def _core_rate(host: HostFacts, table: dict[str, float]) -> float:
    """Weights one core multiplies per second."""
    return table[simd_class(host.simd)] * (host.cpu_mhz or DEFAULT_MHZ) * 1e6


def compute_s(shape: ModelShape, host: HostFacts, threads: int, prompt: bool = False) -> float:
    """Seconds of arithmetic for one token's matrix products, spread over `threads` cores.

    In a prompt the output head multiplies the batch's last token only: its share is left out.
    """
    per_core = _core_rate(host, PROMPT_WEIGHTS_PER_CYCLE if prompt else DECODE_WEIGHTS_PER_CYCLE)
    weights = decode_weights(shape)
    work = sum(n * KIND_COSTS[weight_kind(kind)][int(prompt)] for kind, n in weights)
    if prompt:
        total = sum(n for _, n in weights)
        work *= 1 - min(1.0, shape.vocab_size * shape.n_embd / total) if total else 1.0
    return work / (threads * per_core)


def read_bytes_per_s(host: HostFacts, working_set_bytes: int, threads: int) -> float:
    """The rate at which `threads` decoding threads read a working set of this size: from one
    thread's (its kernels keep more reads in flight than the probe's scan) to all threads'
    together, which are never slower than one (a busy host can make them look so)."""
    assert host.bandwidth is not None
    measured = host.bandwidth
    one = ONE_THREAD_READ_FACTOR * measured.read_bytes_per_s(working_set_bytes, 1)
    every = max(one, measured.read_bytes_per_s(working_set_bytes, measured.threads))
    if measured.threads <= 1:
        return one
    share = (min(threads, measured.threads) - 1) / (measured.threads - 1)
    return one + share * (every - one)


def estimate_speed(
    shape: ModelShape, options: FitOptions, host: HostFacts, kv_bytes: int
) -> SpeedEstimate | None:
    """Tokens/s on this host's CPU, or None where its bandwidth was not measured.

    `kv_bytes` is the whole cache's size (the memory estimate's), part of the working set.
    """
    if host.bandwidth is None:
        return None
    threads = _threads(host, options)
    resident = shape.weight_bytes + kv_bytes
    bandwidth = read_bytes_per_s(host, resident, threads)
    weights_read = decode_read_bytes(shape)
    token_s = compute_s(shape, host, threads)
    batched_s = compute_s(shape, host, threads, prompt=True)
    # Attention multiplies f16 (or dequantized) rows: the float rate.
    attention_mac_s = KIND_COSTS["float"][0] / (
        threads * _core_rate(host, DECODE_WEIGHTS_PER_CYCLE)
    )
    fixed = STEP_FIXED_S + STEP_PER_LAYER_S * shape.n_layers
    fixed += SAMPLE_PER_VOCAB_S * shape.vocab_size

    def step_s(streams: int, position: int) -> tuple[float, str]:
        memory = (weights_read + streams * kv_read_bytes(shape, options, position)) / bandwidth
        share = (streams - 1) / (streams - 1 + BATCH_HALF_STREAMS)
        per_token = token_s + share * (batched_s - token_s)
        compute = streams * (per_token + attention_macs(shape, position) * attention_mac_s)
        per_stream_fixed = fixed + (streams - 1) * SAMPLE_PER_VOCAB_S * shape.vocab_size
        overlap = UNOVERLAPPED_SHARE * min(memory, compute)
        if memory >= compute:
            return memory + overlap + per_stream_fixed, "memory"
        return compute + overlap + per_stream_fixed, "compute"

    cells = kv_cells(shape, options)[0]
    start_s, bound = step_s(1, 0)
    full_s, _ = step_s(1, cells)
    parallel_s, _ = step_s(options.parallel, cells // 2)
    tokens = min(options.batch_tokens, cells)
    prompt_s = tokens * batched_s + weights_read / bandwidth + fixed
    return SpeedEstimate(
        decode_tokens_per_s=1 / start_s,
        decode_full_tokens_per_s=1 / full_s,
        parallel_tokens_per_s=options.parallel / parallel_s,
        prompt_tokens_per_s=tokens / prompt_s,
        bound=bound,
        threads=threads,
        bandwidth_bytes_per_s=bandwidth,
    )

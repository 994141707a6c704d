"""The shape of a model as the memory estimate sees it: layers, heads, windows and weight bytes.

After download the shape comes exactly from the GGUF header (every tensor's byte size, per-layer
head counts, sliding-window layers); before download it is estimated from a model card and a
quantization's typical bits per weight. Both are pure functions over data already read.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from typing import Any

from llmedge.cards import ModelCard
from llmedge.errors import InvalidModelFileError
from llmedge.gguf import GgufHeader, facts_from_header
from llmedge.gguf.ggml_types import GGML_TYPES

# Every Nth layer attends globally, the others through the sliding window, as llama.cpp hard-codes
# it for architectures whose GGUF files carry no per-layer pattern.
SWA_PATTERNS: dict[str, int] = {"gemma2": 2, "gemma3": 6, "cohere2": 4, "gpt-oss": 2, "llama4": 4}

# Typical bits per weight of llama.cpp's quantization mixes (embeddings included), for estimates
# before download; the order is also the quality order used for recommendations.
QUANT_BITS_PER_WEIGHT: dict[str, float] = {
    "f32": 32.0, "f16": 16.0, "bf16": 16.0, "q8_0": 8.5, "q6_k": 6.56, "q5_k_m": 5.69,
    "q5_1": 6.0, "q5_k_s": 5.54, "q5_0": 5.54, "q4_k_m": 4.89, "q4_1": 5.0, "q4_k_s": 4.58,
    "q4_0": 4.55, "iq4_xs": 4.25, "iq4_nl": 4.5, "q3_k_l": 4.27, "q3_k_m": 3.91, "q3_k_s": 3.5,
    "iq3_m": 3.66, "iq3_xxs": 3.06, "q2_k": 3.35, "iq2_m": 2.7, "iq2_xs": 2.31, "iq1_m": 1.75,
}  # fmt: skip

_LAYER = re.compile(r"^blk\.(\d+)\.")
MAX_LAYERS = 4096  # deeper than any real model; a larger block_count is a damaged file


@dataclass(frozen=True)
class ModelShape:
    """What the memory estimate needs to know about one model file, or one planned download."""

    name: str
    architecture: str
    quantization: str
    exact: bool  # read from a GGUF header (True) or estimated from a model card (False)
    n_layers: int
    n_embd: int
    n_heads: int
    n_kv_heads: tuple[int, ...]  # per layer; 0 where a layer keeps no KV cache
    head_dim_k: int
    head_dim_v: int
    n_ff: int  # widest feed-forward, per expert for mixture-of-experts
    vocab_size: int
    ctx_train_tokens: int
    sliding_window: int | None
    swa_layers: tuple[bool, ...]  # per layer: attends through the sliding window
    tied_embeddings: bool
    n_experts: int
    n_experts_used: int
    layer_weight_bytes: tuple[int, ...]  # per layer, as stored
    output_weight_bytes: int  # output norm and head: offloaded with the last layer
    other_weight_bytes: int  # token embeddings and the rest: always on the CPU
    # The matrices one decode step multiplies, as (ggml type, values) totals: what the speed
    # estimate's arithmetic costs. Empty for a card's estimate (its quantization stands in).
    decode_weights: tuple[tuple[str, int], ...] = ()

    @property
    def weight_bytes(self) -> int:
        return sum(self.layer_weight_bytes) + self.output_weight_bytes + self.other_weight_bytes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelShape:
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        for key in ("n_kv_heads", "swa_layers", "layer_weight_bytes"):
            values[key] = tuple(values[key])
        values["decode_weights"] = tuple((k, int(n)) for k, n in values.get("decode_weights", ()))
        return cls(**values)


def quant_rank(quantization: str) -> int:
    """Higher is better quality; unknown quantizations rank last."""
    order = list(QUANT_BITS_PER_WEIGHT)
    name = quantization.lower()
    return len(order) - order.index(name) if name in order else 0


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _per_layer(value: object, n_layers: int, default: int) -> tuple[int, ...]:
    """A per-layer count that GGUF stores either as one int or as an array."""
    if isinstance(value, list):
        ints = [v if isinstance(v, int) else default for v in value[:n_layers]]
        return tuple(ints + [default] * (n_layers - len(ints)))
    single = _int(value)
    return (default if single is None else single,) * n_layers


def swa_layers_for(
    architecture: str, n_layers: int, window: int | None, pattern: object = None
) -> tuple[bool, ...]:
    """Which layers use the sliding window: from the file's pattern, else llama.cpp's defaults."""
    if not window:
        return (False,) * n_layers
    if isinstance(pattern, list):
        return tuple(bool(v) for v in pattern[:n_layers]) + (False,) * (n_layers - len(pattern))
    every = _int(pattern) or SWA_PATTERNS.get(architecture)
    if every is None:
        return (False,) * n_layers  # llama.cpp ignores the window for other architectures
    return tuple(every == 0 or il % every < every - 1 for il in range(n_layers))


def shape_from_header(header: GgufHeader, name: str = "") -> ModelShape:
    """The exact shape of a GGUF file, from its metadata and tensor table."""
    facts = facts_from_header(header)
    arch = facts.architecture

    def key(suffix: str) -> object:
        return header.get(f"{arch}.{suffix}")

    n_layers = facts.n_layers or 0
    if not 0 <= n_layers <= MAX_LAYERS:
        raise InvalidModelFileError(
            name or arch, f"{arch}.block_count is {n_layers}, not a plausible layer count"
        )
    n_embd = facts.n_embd or 0
    n_heads = max(_per_layer(key("attention.head_count"), max(n_layers, 1), 0))
    head_dim_k = _int(key("attention.key_length")) or (n_embd // n_heads if n_heads else 0)
    head_dim_v = _int(key("attention.value_length")) or head_dim_k
    n_kv_heads = _per_layer(key("attention.head_count_kv"), n_layers, n_heads)
    n_ff = max(
        _per_layer(key("expert_feed_forward_length"), 1, 0)
        + _per_layer(key("feed_forward_length"), max(n_layers, 1), 0)
    )
    window = _int(key("attention.sliding_window"))

    layer_bytes = [0] * n_layers
    output_bytes = other_bytes = 0
    tied = not any(t.name == "output.weight" for t in header.tensors)
    n_experts, n_used = _int(key("expert_count")) or 0, _int(key("expert_used_count")) or 0
    decode: dict[str, float] = {}
    for tensor in header.tensors:
        match = _LAYER.match(tensor.name)
        if match and int(match.group(1)) < n_layers:
            layer_bytes[int(match.group(1))] += tensor.nbytes
        elif tensor.name.startswith(("output.", "output_norm.")):
            output_bytes += tensor.nbytes
        else:
            other_bytes += tensor.nbytes
        # Matrices a token multiplies: the layers' and the output head (the embeddings, when
        # tied; else only their rows are looked up); of routed experts, the share used.
        head = tensor.name == "output.weight" or (tied and tensor.name == "token_embd.weight")
        if len(tensor.shape) >= 2 and (head or match):
            share = n_used / n_experts if "_exps" in tensor.name and n_experts else 1.0
            kind = GGML_TYPES[tensor.type_id].name if tensor.type_id in GGML_TYPES else "f32"
            decode[kind] = decode.get(kind, 0) + tensor.n_elements * share
    vocab = facts.vocab_size or _int(key("vocab_size")) or 0
    return ModelShape(
        name=name or facts.name or arch,
        architecture=arch,
        quantization=facts.quantization.lower(),
        exact=True,
        n_layers=n_layers,
        n_embd=n_embd,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        head_dim_k=head_dim_k,
        head_dim_v=head_dim_v,
        n_ff=n_ff,
        vocab_size=vocab,
        ctx_train_tokens=facts.ctx_train_tokens or 0,
        sliding_window=window,
        swa_layers=swa_layers_for(arch, n_layers, window, key("attention.sliding_window_pattern")),
        tied_embeddings=tied,
        n_experts=n_experts,
        n_experts_used=n_used,
        layer_weight_bytes=tuple(layer_bytes),
        output_weight_bytes=output_bytes,
        other_weight_bytes=other_bytes,
        decode_weights=tuple(sorted((kind, int(n)) for kind, n in decode.items())),
    )


def shape_from_card(card: ModelCard, quantization: str) -> ModelShape:
    """An estimated shape for a card's model in a quantization, before anything is downloaded."""
    arch = card.architecture
    bits = QUANT_BITS_PER_WEIGHT.get(quantization.lower())
    if bits is None:
        known = ", ".join(QUANT_BITS_PER_WEIGHT)
        raise KeyError(f"no size estimate for quantization {quantization!r}; known: {known}")
    embed_params = arch.vocab_size * arch.hidden_size
    attn_params = arch.hidden_size * arch.head_dim * (2 * arch.attention_heads + 2 * arch.kv_heads)
    head_params = 0 if arch.tied_embeddings else embed_params
    # Cards carry no feed-forward width: it is what the parameter count leaves for 3 matrices.
    ffn_params = card.parameters - embed_params - head_params - arch.layers * attn_params
    n_ff = max(arch.hidden_size, ffn_params // max(1, 3 * arch.layers * arch.hidden_size))
    layer_params = attn_params + 3 * arch.hidden_size * n_ff
    pattern = arch.sliding_window_pattern
    return ModelShape(
        name=card.name,
        architecture=arch.family,
        quantization=quantization.lower(),
        exact=False,
        n_layers=arch.layers,
        n_embd=arch.hidden_size,
        n_heads=arch.attention_heads,
        n_kv_heads=(arch.kv_heads,) * arch.layers,
        head_dim_k=arch.head_dim,
        head_dim_v=arch.head_dim,
        n_ff=n_ff,
        vocab_size=arch.vocab_size,
        ctx_train_tokens=arch.context_length,
        sliding_window=arch.sliding_window,
        swa_layers=swa_layers_for(arch.family, arch.layers, arch.sliding_window, pattern),
        tied_embeddings=arch.tied_embeddings,
        n_experts=0,
        n_experts_used=0,
        layer_weight_bytes=(int(layer_params * bits / 8),) * arch.layers,
        output_weight_bytes=int(head_params * bits / 8),
        other_weight_bytes=int(embed_params * bits / 8),
    )

"""A tiny llama-architecture GGUF that llama.cpp loads and runs: SmolLM2's real tokenizer and chat
template over two random layers of width 64 (a few MB instead of 98).

Its answers are noise, but everything the engine does with a model is real: tokenizing, chat
templates, batched decoding, sampling, cancellation, embeddings. What only the real model shows
(sensible text, tool calls a model chooses to make) stays with the tests that use `smollm2_gguf`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

N_EMBD = 64
N_FF = 128
N_HEAD = 4
N_HEAD_KV = 2
N_LAYERS = 2
CTX_TRAIN_TOKENS = 4096
# Copied from the real model: the tokenizer, its special tokens and the chat template.
_TOKENIZER_KEYS = (
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_space_prefix",
    "tokenizer.chat_template",
)


def _copy_field(writer: Any, reader: Any, key: str, relabel: int | None = None) -> None:
    import gguf

    field = reader.fields[key]
    kind = field.types[0]
    if kind == gguf.GGUFValueType.ARRAY:
        values = list(field.contents())
        if relabel is not None and key == "tokenizer.ggml.tokens":
            values[relabel] = "<relabelled>"  # a tokenizer that differs in one token
        writer.add_array(key, values)
    elif kind == gguf.GGUFValueType.STRING:
        writer.add_string(key, field.contents())
    elif kind == gguf.GGUFValueType.BOOL:
        writer.add_bool(key, bool(field.contents()))
    else:
        writer.add_uint32(key, int(field.contents()))


def build_tiny_gguf(
    source: Path, out: Path, seed: int = 0, name: str = "tiny-llama", relabel: int | None = None
) -> Path:
    """Write the tiny model to `out`, taking the tokenizer from the GGUF at `source` (with
    token `relabel`, if given, named otherwise)."""
    return build_tiny_parts(source, out, seed=seed, name=name, relabel=relabel)[0]


def build_tiny_parts(
    source: Path,
    out: Path,
    *,
    seed: int = 0,
    name: str = "tiny-llama",
    max_tensors_per_part: int = 0,
    last_layer_seed: int | None = None,
    relabel: int | None = None,
) -> list[Path]:
    """The tiny model, split into parts of at most `max_tensors_per_part` tensors the way
    llama.cpp's gguf-split does (`<stem>-00001-of-0000N.gguf`, …; 0: one file). With
    `last_layer_seed`, only the last layer's weights differ: an update that changes the last
    part and leaves the others byte for byte the same."""
    import gguf

    reader = gguf.GGUFReader(source)
    n_vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(out, "llama", split_max_tensors=max_tensors_per_part)
    writer.add_name(name)
    writer.add_block_count(N_LAYERS)
    writer.add_context_length(CTX_TRAIN_TOKENS)
    writer.add_embedding_length(N_EMBD)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD_KV)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    for key in _TOKENIZER_KEYS:
        _copy_field(writer, reader, key, relabel)

    def matrix(rows: int, cols: int) -> np.ndarray[Any, Any]:
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float16)

    head_dim = N_EMBD // N_HEAD
    writer.add_tensor("token_embd.weight", matrix(n_vocab, N_EMBD))
    writer.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    for i in range(N_LAYERS):
        if i == N_LAYERS - 1 and last_layer_seed is not None:
            rng = np.random.default_rng(last_layer_seed)
        block = f"blk.{i}"
        writer.add_tensor(f"{block}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        writer.add_tensor(f"{block}.attn_q.weight", matrix(N_EMBD, N_EMBD))
        writer.add_tensor(f"{block}.attn_k.weight", matrix(N_HEAD_KV * head_dim, N_EMBD))
        writer.add_tensor(f"{block}.attn_v.weight", matrix(N_HEAD_KV * head_dim, N_EMBD))
        writer.add_tensor(f"{block}.attn_output.weight", matrix(N_EMBD, N_EMBD))
        writer.add_tensor(f"{block}.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        writer.add_tensor(f"{block}.ffn_gate.weight", matrix(N_FF, N_EMBD))
        writer.add_tensor(f"{block}.ffn_up.weight", matrix(N_FF, N_EMBD))
        writer.add_tensor(f"{block}.ffn_down.weight", matrix(N_EMBD, N_FF))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return writer.format_shard_names(out)

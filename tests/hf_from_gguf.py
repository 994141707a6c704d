"""A Hugging Face safetensors folder rebuilt from the shipped SmolLM2 GGUF, without the hub.

The real model, dequantized to float16, with its byte-level BPE tokenizer and chat template, so
conversion to MLX (and serving the result) is tested on a model that answers sensibly. Only the
Llama layout is handled: llama.cpp's converter interleaves the rows of the Q and K projections
for its rotary embedding, and this undoes that.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

# GGUF tensor names -> Hugging Face Llama names.
_GLOBAL = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_CONTROL_TOKEN = 3  # llama.cpp's token type for special tokens


def _unpermute(weights: NDArray[Any], n_heads: int) -> NDArray[Any]:
    rows = weights.shape[0]
    halves = weights.reshape(n_heads, rows // n_heads // 2, 2, *weights.shape[1:])
    return halves.swapaxes(1, 2).reshape(weights.shape)


def _hf_name(name: str) -> str:
    if name in _GLOBAL:
        return _GLOBAL[name]
    match = re.fullmatch(r"blk\.(\d+)\.(\w+)\.weight", name)
    if match is None or match.group(2) not in _LAYER:
        raise ValueError(f"no Hugging Face name for GGUF tensor {name}")
    return f"model.layers.{match.group(1)}.{_LAYER[match.group(2)]}.weight"


def build_hf_from_gguf(gguf_path: Path, folder: Path) -> Path:
    """Write config.json, model.safetensors and the tokenizer files into `folder` (once)."""
    if (folder / "model.safetensors").is_file():
        return folder
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from safetensors.numpy import save_file

    reader = GGUFReader(gguf_path)

    def value(key: str) -> Any:
        return reader.fields[key].contents()

    if value("general.architecture") != "llama":
        raise ValueError(f"{gguf_path} is not a Llama model")
    n_heads = value("llama.attention.head_count")
    n_kv_heads = value("llama.attention.head_count_kv")
    tensors = {}
    for tensor in reader.tensors:
        weights = dequantize(tensor.data, tensor.tensor_type)
        if ".attn_q." in tensor.name:
            weights = _unpermute(weights, n_heads)
        elif ".attn_k." in tensor.name:
            weights = _unpermute(weights, n_kv_heads)
        tensors[_hf_name(tensor.name)] = np.ascontiguousarray(weights, dtype=np.float16)
    staging = folder.with_name(folder.name + ".building")
    staging.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(staging / "model.safetensors"))
    tokens = value("tokenizer.ggml.tokens")
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": value("llama.embedding_length"),
        "intermediate_size": value("llama.feed_forward_length"),
        "num_hidden_layers": value("llama.block_count"),
        "num_attention_heads": n_heads,
        "num_key_value_heads": n_kv_heads,
        "head_dim": value("llama.rope.dimension_count"),
        "rms_norm_eps": value("llama.attention.layer_norm_rms_epsilon"),
        "rope_theta": value("llama.rope.freq_base"),
        "max_position_embeddings": value("llama.context_length"),
        "vocab_size": len(tokens),
        "tie_word_embeddings": "lm_head.weight" not in tensors,
        "bos_token_id": value("tokenizer.ggml.bos_token_id"),
        "eos_token_id": value("tokenizer.ggml.eos_token_id"),
        "torch_dtype": "float16",
    }
    (staging / "config.json").write_text(json.dumps(config, indent=2))
    _write_tokenizer(value, staging)
    staging.rename(folder)
    return folder


def build_tokenizer_from_gguf(gguf_path: Path, folder: Path) -> Path:
    """Write only tokenizer.json and tokenizer_config.json (with the chat template)."""
    from gguf import GGUFReader

    reader = GGUFReader(gguf_path)
    folder.mkdir(parents=True, exist_ok=True)
    _write_tokenizer(lambda key: reader.fields[key].contents(), folder)
    return folder


def _write_tokenizer(value: Any, folder: Path) -> None:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    tokens: list[str] = value("tokenizer.ggml.tokens")
    types: list[int] = value("tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in value("tokenizer.ggml.merges")]
    bpe = models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges)
    tokenizer = Tokenizer(bpe)
    # SmolLM's pre-tokenizer ("smollm" in llama.cpp): single digits, then GPT-2 byte level.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])  # fmt: skip
    tokenizer.decoder = decoders.ByteLevel()
    special = [t for t, kind in zip(tokens, types, strict=True) if kind == _CONTROL_TOKEN]
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    tokenizer.save(str(folder / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": False,
        "bos_token": tokens[value("tokenizer.ggml.bos_token_id")],
        "eos_token": tokens[value("tokenizer.ggml.eos_token_id")],
        "unk_token": tokens[value("tokenizer.ggml.unknown_token_id")],
        "pad_token": tokens[value("tokenizer.ggml.padding_token_id")],
        "model_max_length": value("llama.context_length"),
        "chat_template": value("tokenizer.chat_template"),
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))

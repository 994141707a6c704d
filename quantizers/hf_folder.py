"""What a Hugging Face model folder says about itself, read without loading its weights.

The safetensors headers give the bytes the weights take (and, for an unquantized folder, how many
weights there are); `config.json` and the tokenizer config give the facts a manifest records.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmedge.errors import QuantizationError
from llmedge.gguf import ModelFacts

_HEADER_LIMIT_BYTES = 100 << 20


@dataclass(frozen=True)
class TensorStats:
    """Totals over every tensor of a folder's safetensors files."""

    nbytes: int
    n_elements: int


def tensor_stats(folder: Path) -> TensorStats:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise QuantizationError(f"{folder} has no .safetensors files; is it a model folder?")
    nbytes = elements = 0
    for path in files:
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > _HEADER_LIMIT_BYTES:
                raise QuantizationError(f"{path} has a {length}-byte header: not safetensors")
            header: dict[str, Any] = json.loads(handle.read(length))
        for name, tensor in header.items():
            if name == "__metadata__":
                continue
            start, end = tensor["data_offsets"]
            nbytes += end - start
            elements += math.prod(tensor["shape"])
    return TensorStats(nbytes, elements)


def read_config(folder: Path) -> dict[str, Any]:
    try:
        config: dict[str, Any] = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise QuantizationError(
            f"{folder} has no readable config.json ({exc}); give a Hugging Face model folder"
        ) from exc
    return config


def _chat_template(folder: Path) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    template = config.get("chat_template")
    return template if isinstance(template, str) else None


def facts_from_folder(folder: Path, quantization: str, parameters: int) -> ModelFacts:
    """The manifest facts of a folder; `parameters` counts the unquantized weights."""
    config = read_config(folder)
    text = config.get("text_config") or config  # multimodal configs nest the language model

    def num(key: str) -> int | None:
        value = text.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    return ModelFacts(
        architecture=str(text.get("model_type") or config.get("model_type") or "unknown"),
        name=None,  # config.json names no model, only the path it was saved from
        parameters=parameters,
        quantization=quantization,
        ctx_train_tokens=num("max_position_embeddings"),
        n_layers=num("num_hidden_layers"),
        n_embd=num("hidden_size"),
        n_heads=num("num_attention_heads"),
        n_kv_heads=num("num_key_value_heads") or num("num_attention_heads"),
        vocab_size=num("vocab_size"),
        chat_template=_chat_template(folder),
    )


def linear_widths(folder: Path) -> dict[str, int]:
    """The input widths of a decoder's linear layers, from its config (for group-size checks)."""
    config = read_config(folder)
    text = config.get("text_config") or config
    hidden = int(text["hidden_size"])
    heads = int(text["num_attention_heads"])
    head_dim = int(text.get("head_dim") or hidden // heads)
    return {
        "hidden_size": hidden,
        "intermediate_size": int(text.get("intermediate_size") or hidden),
        "attention output": heads * head_dim,
    }

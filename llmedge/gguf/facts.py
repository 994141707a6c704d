"""The facts about a GGUF model that llmedge shows, stores in manifests and reasons with."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from llmedge.gguf.ggml_types import FILE_TYPES, GGML_TYPES
from llmedge.gguf.header import GgufHeader


@dataclass(frozen=True)
class ModelFacts:
    architecture: str
    name: str | None
    parameters: int
    quantization: str
    ctx_train_tokens: int | None
    n_layers: int | None
    n_embd: int | None
    n_heads: int | None
    n_kv_heads: int | None
    vocab_size: int | None
    chat_template: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelFacts:
        known: dict[str, Any] = {key: data.get(key) for key in cls.__dataclass_fields__}
        return cls(**known)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _quantization(header: GgufHeader) -> str:
    file_type = _int(header.get("general.file_type"))
    if file_type is not None and file_type in FILE_TYPES:
        return FILE_TYPES[file_type]
    # No file type recorded: name it after the most common type among the 2-D weights.
    counts = Counter(t.type_id for t in header.tensors if len(t.shape) >= 2)
    if not counts:
        return "unknown"
    return GGML_TYPES[counts.most_common(1)[0][0]].name.upper()


def facts_from_header(header: GgufHeader) -> ModelFacts:
    """The facts a header states; absent keys become None rather than guesses."""
    arch = _str(header.get("general.architecture")) or "unknown"

    def arch_int(suffix: str) -> int | None:
        value = header.get(f"{arch}.{suffix}")
        if isinstance(value, list):  # per-layer head counts: report the largest
            ints = [v for v in value if isinstance(v, int)]
            return max(ints) if ints else None
        return _int(value)

    return ModelFacts(
        architecture=arch,
        name=_str(header.get("general.name")),
        parameters=sum(t.n_elements for t in header.tensors),
        quantization=_quantization(header),
        ctx_train_tokens=arch_int("context_length"),
        n_layers=arch_int("block_count"),
        n_embd=arch_int("embedding_length"),
        n_heads=arch_int("attention.head_count"),
        n_kv_heads=arch_int("attention.head_count_kv"),
        vocab_size=header.array_length("tokenizer.ggml.tokens"),
        chat_template=_str(header.get("tokenizer.chat_template")),
    )

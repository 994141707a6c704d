"""Bounds on what a GGUF file may claim before llama.cpp is shown it.

llama.cpp trusts a file's architecture facts: a `block_count` of 0 or 1000 fails an assertion
and aborts the whole process (it allows 1 to 512 layers), and 100,000 tensors keep its loader
busy for most of a minute (its tensor bookkeeping grows with the square of the count). These
checks refuse such files with `InvalidModelFileError`, at import and before every load. The
bounds are far outside real models, so a model that passes is one llama.cpp may still refuse,
but with an error rather than an abort (`llmedge.backends.llama.preflight` covers the rest).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from llmedge.errors import InvalidModelFileError


class _Tensor(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def nbytes(self) -> int: ...


class _Header(Protocol):
    """What the checks read of a `GgufHeader` (named structurally: the reader calls them)."""

    @property
    def tensors(self) -> Sequence[_Tensor]: ...
    @property
    def file_size(self) -> int: ...
    @property
    def data_offset(self) -> int: ...
    def get(self, key: str) -> object: ...
    def array_length(self, key: str) -> int | None: ...


LLAMA_MAX_LAYERS = 512  # llama.cpp's own bound, asserted (abort) when a file is outside it
MAX_TENSORS = 16384  # the largest real models have a few thousand
MIN_CONTEXT_TOKENS = 64  # the smallest context llmedge runs (Settings.ctx_tokens)
# (key suffix, smallest, largest) for the per-architecture facts llama.cpp sizes things from.
_FACT_BOUNDS = (
    ("block_count", 1, LLAMA_MAX_LAYERS),
    ("context_length", MIN_CONTEXT_TOKENS, 1 << 30),
    ("embedding_length", 1, 1 << 20),
    ("feed_forward_length", 0, 1 << 24),
    ("attention.head_count", 0, 1 << 14),
    ("attention.head_count_kv", 0, 1 << 14),
    ("attention.key_length", 1, 1 << 16),
    ("attention.value_length", 1, 1 << 16),
    ("expert_count", 0, 1 << 12),
    ("expert_used_count", 0, 1 << 12),
    ("vocab_size", 1, 1 << 24),
)
MAX_VOCAB_TOKENS = 1 << 24


def _values(value: object) -> list[object]:
    return value if isinstance(value, list) else [value]


def check_model_header(header: _Header, path: str) -> None:
    """Refuse a header whose architecture facts or tensor table llama.cpp cannot survive."""

    def refuse(reason: str) -> InvalidModelFileError:
        return InvalidModelFileError(path, reason)

    if len(header.tensors) > MAX_TENSORS:
        count = len(header.tensors)
        raise refuse(f"it lists {count} tensors, more than the {MAX_TENSORS} allowed")
    names = {t.name for t in header.tensors}
    if len(names) != len(header.tensors):
        raise refuse("two tensors share a name")
    data_bytes = header.file_size - header.data_offset
    total = sum(t.nbytes for t in header.tensors)
    if total > data_bytes:
        raise refuse(f"its tensors need {total} bytes but {data_bytes} follow the header")
    arch = header.get("general.architecture")
    if not isinstance(arch, str):
        return  # not a model llama.cpp would load as one; the loader refuses it cleanly
    for suffix, low, high in _FACT_BOUNDS:
        key = f"{arch}.{suffix}"
        stated = header.get(key)
        if stated is None:  # absent, or a long array left unread
            continue
        for value in _values(stated):
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise refuse(f"{key} is {value!r}, outside {low}..{high}")
    tokens = header.array_length("tokenizer.ggml.tokens")
    if tokens is not None and not 1 <= tokens <= MAX_VOCAB_TOKENS:
        raise refuse(f"its vocabulary has {tokens} tokens, outside 1..{MAX_VOCAB_TOKENS}")

"""GGUF files: the bounded header reader, the tensor and quantization types, model facts, and
models split into parts."""

from __future__ import annotations

from llmedge.gguf.facts import ModelFacts, facts_from_header
from llmedge.gguf.header import GgufHeader, TensorInfo, read_gguf_header
from llmedge.gguf.split import merge_split, read_model_header, split_count

__all__ = [
    "GgufHeader",
    "ModelFacts",
    "TensorInfo",
    "facts_from_header",
    "merge_split",
    "read_gguf_header",
    "read_model_header",
    "split_count",
]

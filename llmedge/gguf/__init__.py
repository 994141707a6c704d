"""GGUF files: the bounded header reader, the tensor and quantization types, and model facts."""

from __future__ import annotations

from llmedge.gguf.facts import ModelFacts, facts_from_header
from llmedge.gguf.header import GgufHeader, TensorInfo, read_gguf_header

__all__ = ["GgufHeader", "ModelFacts", "TensorInfo", "facts_from_header", "read_gguf_header"]

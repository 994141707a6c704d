"""The contract every inference engine implements: probe the host, load, stream chunks, close.

Engines are imported inside their functions, so `import llmedge` never needs llama_cpp or mlx.
"""

from __future__ import annotations

import atexit
import threading
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from llmedge.generation import ChatMessage, GenerationChunk, SamplingParams


@dataclass(frozen=True)
class Availability:
    """Whether a backend can run here, and why (or why not)."""

    available: bool
    reason: str


@dataclass(frozen=True)
class LoadOptions:
    ctx_tokens: int  # per sequence
    threads: int
    gpu_layers: int = -1
    parallel: int = 1  # sequences decoded together
    kv_type_k: str = "f16"  # KV cache types (llama.cpp): f16, q8_0 or q4_0
    kv_type_v: str = "f16"
    flash_attn: str = "auto"  # auto, on or off (llama.cpp)


@runtime_checkable
class LoadedModel(Protocol):
    """A model in memory, ready to generate. Not safe to call from two threads at once."""

    @property
    def ctx_tokens(self) -> int:
        """Context window of each sequence."""
        ...

    @property
    def parallel(self) -> int:
        """How many generations may run at once (each from its own thread)."""
        ...

    def tokenize(self, text: str) -> list[int]: ...

    def render_chat(
        self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] | None = None
    ) -> str:
        """The prompt for a conversation, through the model's own chat template."""
        ...

    def generate(
        self, prompt_tokens: Sequence[int], params: SamplingParams, cancel: threading.Event
    ) -> Iterator[GenerationChunk]:
        """Stream the continuation of `prompt_tokens`; the last chunk has a finish reason."""
        ...

    def embed(self, texts: Sequence[str]) -> tuple[list[list[float]], int]:
        """Normalised embedding vectors of the texts, and the tokens they took."""
        ...

    def close(self) -> None: ...


class Backend(Protocol):
    """An inference engine llmedge can drive."""

    name: str
    formats: tuple[str, ...]

    def probe(self) -> Availability: ...

    def load(self, path: Path, options: LoadOptions) -> LoadedModel: ...


class _OpenAtExit:
    """Models still open at interpreter exit, closed first: a decoding thread or a server process
    left running while the interpreter tears down would call into freed memory, or outlive us."""

    def __init__(self) -> None:
        self.models: weakref.WeakSet[LoadedModel] = weakref.WeakSet()
        atexit.register(self.close_all)

    def close_all(self) -> None:
        for model in list(self.models):
            model.close()


_OPEN = _OpenAtExit()


def close_at_exit(model: LoadedModel) -> None:
    """Close `model` at interpreter exit unless it is closed (or collected) before."""
    _OPEN.models.add(model)

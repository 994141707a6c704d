"""The contract every inference engine implements: probe the host, load, take generations, close.

A loaded model takes each generation as a `GenerationSink` and writes the answer's chunks straight
into it, from its own thread: no relay in between. Engines are imported inside their functions,
so `import llmedge` never needs llama_cpp or mlx.
"""

from __future__ import annotations

import atexit
import threading
import weakref
from collections.abc import Mapping, Sequence
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
    preflight_dir: Path | None = None  # where a backend keeps what its test loads found
    # Speculative decoding: "off", "ngram" (guesses from the context), or "draft" (from
    # `draft_path`, a small model with the same vocabulary). Backends that cannot ignore it.
    speculative: str = "ngram"
    draft_path: Path | None = None
    kv_type_k: str = "f16"  # KV cache types (llama.cpp): f16, q8_0 or q4_0
    kv_type_v: str = "f16"
    flash_attn: str = "auto"  # auto, on or off (llama.cpp)


class GenerationSink(Protocol):
    """Where a backend writes one generation (the engine's `GenerationStream` is one).

    The backend ends it exactly once: `put` with a chunk whose finish reason is set, or `fail`.
    Once `cancelled`, it stops at its next token and fails the sink with
    `GenerationCancelledError` (whatever it writes after the end is ignored).
    """

    tokens: tuple[int, ...]
    params: SamplingParams
    cancel_event: threading.Event
    cancelled_at: float | None  # time.monotonic() when it was cancelled

    @property
    def cancelled(self) -> bool: ...

    def put(self, chunk: GenerationChunk) -> None: ...

    def fail(self, error: BaseException) -> None: ...


@runtime_checkable
class LoadedModel(Protocol):
    """A model in memory, ready to generate. `submit` may be called from any thread; the other
    methods are safe to call while generations run."""

    @property
    def ctx_tokens(self) -> int:
        """Context window of each sequence."""
        ...

    @property
    def parallel(self) -> int:
        """How many generations it decodes at once; the others wait in its line."""
        ...

    def tokenize(self, text: str) -> list[int]: ...

    def render_chat(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[dict[str, Any]] | None = None,
        template: str | None = None,
    ) -> str:
        """The prompt for a conversation, through the model's own chat template (or the Jinja
        `template` given instead, with the model's special tokens)."""
        ...

    def submit(self, job: GenerationSink) -> None:
        """Start generating the continuation of `job.tokens` into `job`, now or when a sequence
        frees; never blocks. A request it cannot honour (a grammar that does not parse) raises
        here, before anything is written."""
        ...

    def embed(self, texts: Sequence[str | Sequence[int]]) -> tuple[list[list[float]], int]:
        """Normalised embedding vectors of the texts (or token-id lists, used as they are),
        and the tokens they took."""
        ...

    def counters(self) -> Mapping[str, float]:
        """What the engine has done so far, for /metrics (`*_total` counters, `*_max` gauges)."""
        ...

    def close(self) -> None:
        """Free the model; a generation still running or waiting ends with an error."""
        ...


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

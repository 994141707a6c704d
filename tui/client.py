"""The one interface the chat screen talks to, whether the model runs in-process or on a server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from llmedge import ChatMessage, GenerationChunk, SamplingParams


@dataclass(frozen=True)
class ModelInfo:
    """What the status bar shows about the model in use."""

    ref: str
    backend: str
    quantization: str | None = None
    ctx_tokens: int | None = None


class ChatClient(Protocol):
    """Streams chat answers from some model; both modes of `llmedge chat` implement it."""

    @property
    def where(self) -> str:
        """Where the model runs, for the title bar ("in-process" or the server's address)."""
        ...

    async def open(self, name: str) -> ModelInfo:
        """Make `name` the model in use (loading it when needed) and describe it."""
        ...

    async def models(self) -> list[str]:
        """References of the models this client can switch to."""
        ...

    def stream(
        self, model: str, messages: Sequence[ChatMessage], params: SamplingParams
    ) -> AsyncIterator[GenerationChunk]:
        """The answer's chunks; cancelling the consuming task stops the generation."""
        ...

    async def count_tokens(self, model: str, messages: Sequence[ChatMessage]) -> int | None:
        """Tokens this conversation takes in the context, or None when that is unknown."""
        ...

    def memory_bytes(self) -> int | None:
        """Memory held by the process that runs the model, or None when that is unknown."""
        ...

    async def close(self) -> None: ...

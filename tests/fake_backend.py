"""A scripted backend for fast unit tests where the engine itself is not the point."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from llmedge.backends import Availability, LoadOptions
from llmedge.generation import ChatMessage, GenerationChunk, SamplingParams


class ScriptedModel:
    """Answers with the pieces queued by `enqueue`, one chunk per piece."""

    def __init__(self, ctx_tokens: int = 64, delay_s: float = 0.0, parallel: int = 1) -> None:
        self._ctx = ctx_tokens
        self._parallel = parallel
        self.delay_s = delay_s
        self.answers: list[list[str]] = []
        self.prompts: list[tuple[int, ...]] = []
        self.closed = False

    @property
    def ctx_tokens(self) -> int:
        return self._ctx

    @property
    def parallel(self) -> int:
        return self._parallel

    def enqueue(self, *pieces: str) -> None:
        self.answers.append(list(pieces))

    def tokenize(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def render_chat(
        self, messages: Sequence[ChatMessage], tools: object = None, template: str | None = None
    ) -> str:
        return "".join(f"{m.role}:{m.content}\n" for m in messages) + "assistant:"

    def generate(
        self, prompt_tokens: Sequence[int], params: SamplingParams, cancel: threading.Event
    ) -> Iterator[GenerationChunk]:
        self.prompts.append(tuple(prompt_tokens))
        pieces = self.answers.pop(0) if self.answers else ["ok"]
        sent = 0
        for piece in pieces:
            if cancel.is_set():
                yield GenerationChunk("", finish_reason="cancelled", generated_tokens=sent)
                return
            time.sleep(self.delay_s)
            sent += 1
            yield GenerationChunk(
                piece, (sent,), prompt_tokens=len(prompt_tokens), generated_tokens=sent
            )
        yield GenerationChunk(
            "", finish_reason="stop", prompt_tokens=len(prompt_tokens), generated_tokens=sent
        )

    def embed(self, texts: Sequence[str]) -> tuple[list[list[float]], int]:
        return [[float(len(t)), 1.0] for t in texts], sum(len(t) for t in texts)

    def close(self) -> None:
        self.closed = True


class ScriptedBackend:
    name = "scripted"
    formats = ("gguf",)

    def __init__(self, model: ScriptedModel | None = None) -> None:
        self.model = model or ScriptedModel()
        self.loads: list[Path] = []

    def probe(self) -> Availability:
        return Availability(True, "scripted for tests")

    def load(self, path: Path, options: LoadOptions) -> ScriptedModel:
        self.loads.append(path)
        return self.model

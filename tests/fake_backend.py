"""A scripted backend for fast unit tests where the engine itself is not the point."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from llmedge.backends import Availability, GenerationSink, LoadOptions
from llmedge.backends.serial import SerialQueue
from llmedge.engine import GenerationStream
from llmedge.generation import ChatMessage, GenerationChunk, SamplingParams


class Gate:
    """A place in a scripted answer (or in `embed`) where the model stops until `go` is set;
    `reached` is set when it gets there. Lets a test put a race exactly where it wants it."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.go = threading.Event()

    def pass_through(self, timeout_s: float = 30.0) -> None:
        self.reached.set()
        if not self.go.wait(timeout_s):
            raise TimeoutError("a gate in a scripted model was never opened")


class ScriptedModel:
    """Answers with the pieces queued by `enqueue`, one chunk per piece, through the same
    serial submission path as the MLX and transformers backends."""

    def __init__(self, ctx_tokens: int = 64, delay_s: float = 0.0, parallel: int = 1) -> None:
        self._ctx = ctx_tokens
        self._parallel = parallel
        self.delay_s = delay_s
        self.answers: list[list[str | Gate]] = []
        self.prompts: list[tuple[int, ...]] = []
        self.closed = False
        self.embed_gate: Gate | None = None
        self._queue = SerialQueue(self.generate, "scripted", workers=parallel)

    @property
    def ctx_tokens(self) -> int:
        return self._ctx

    @property
    def parallel(self) -> int:
        return self._parallel

    def enqueue(self, *pieces: str | Gate) -> None:
        """The next answer: its text pieces, with gates where it should wait."""
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
            if isinstance(piece, Gate):
                piece.pass_through()
                continue
            if cancel.is_set():
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
        if self.embed_gate is not None:
            self.embed_gate.pass_through()
        if self.closed:
            raise RuntimeError("embed ran on a closed model (the crash llama.cpp would have)")
        return [[float(len(t)), 1.0] for t in texts], sum(len(t) for t in texts)

    def counters(self) -> Mapping[str, float]:
        return {}

    def submit(self, job: GenerationSink) -> None:
        self._queue.submit(job)

    def close(self) -> None:
        self._queue.close()
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


def generate_all(
    model: object, tokens: list[int], params: SamplingParams, cancel: bool = False
) -> list[GenerationChunk]:
    """Submit one generation straight to a loaded model and read it to its end."""
    stream = GenerationStream(tuple(tokens), params, None)
    if cancel:
        stream.cancel()
    model.submit(stream)  # type: ignore[attr-defined]
    return list(stream)

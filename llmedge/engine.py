"""The engine: loads stored models on demand and streams generations to async callers.

Each loaded model gets one worker thread that runs its generations in order (a llama.cpp context
is not thread-safe); callers wait in a bounded queue and get `EngineBusyError` when it is full.
A caller that stops reading cancels its generation at the next token.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass

from llmedge.backends import Backend, LoadedModel, LoadOptions, get_backend
from llmedge.errors import ContextLengthExceededError, LlmedgeError
from llmedge.generation import ChatMessage, GenerationChunk, SamplingParams
from llmedge.settings import Settings
from llmedge.store import Manifest, ModelRef, Store

DEFAULT_BACKEND = "llama.cpp"
_END = object()


class EngineBusyError(LlmedgeError):
    """Every slot and queue place for a model is taken; try again shortly."""

    http_status = 503
    code = "server_busy"
    retry_after_s = 2


@dataclass(frozen=True)
class PreparedPrompt:
    """A prompt checked against the model's context, ready to generate from."""

    model: LoadedEntry
    tokens: tuple[int, ...]
    params: SamplingParams


class GenerationStream:
    """A submitted generation. Iterate it (plainly or with `async for`) for its chunks;
    `cancel()` stops it at the next token, and leaving an iteration early cancels it too."""

    def __init__(self, prompt: PreparedPrompt, loop: asyncio.AbstractEventLoop | None) -> None:
        self.prompt = prompt
        self.cancelled = threading.Event()
        self._inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._loop = loop
        self._ready = asyncio.Event() if loop else None

    def emit(self, item: object) -> None:
        """Called by the worker thread with each chunk, an exception, or the end marker."""
        self._inbox.put(item)
        if self._loop is not None and self._ready is not None:
            self._loop.call_soon_threadsafe(self._ready.set)

    def cancel(self) -> None:
        self.cancelled.set()

    def __iter__(self) -> Iterator[GenerationChunk]:
        try:
            while (chunk := _unwrap(self._inbox.get())) is not None:
                yield chunk
        finally:
            self.cancel()

    async def __aiter__(self) -> AsyncIterator[GenerationChunk]:
        if self._ready is None:
            raise RuntimeError("this stream was started outside an event loop; iterate it plainly")
        try:
            while True:
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    self._ready.clear()
                    if self._inbox.empty():
                        await self._ready.wait()
                    continue
                if (chunk := _unwrap(item)) is None:
                    return
                yield chunk
        finally:
            self.cancel()


class LoadedEntry:
    """A model in memory with the worker thread that runs its generations."""

    def __init__(
        self, manifest: Manifest, backend: str, model: LoadedModel, max_queue: int
    ) -> None:
        self.manifest = manifest
        self.backend = backend
        self.model = model
        self.max_queue = max_queue
        self._waiting: deque[GenerationStream] = deque()
        self._wake = threading.Condition()
        self._closing = False
        self._current: GenerationStream | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"llmedge-{manifest.ref}", daemon=True
        )
        self._thread.start()

    def submit(self, job: GenerationStream) -> None:
        with self._wake:
            if len(self._waiting) >= self.max_queue:
                self._drop_cancelled()
            if len(self._waiting) >= self.max_queue:
                raise EngineBusyError(
                    f"model {self.manifest.ref} has {self.max_queue} requests waiting; "
                    "retry shortly"
                )
            self._waiting.append(job)
            self._wake.notify()

    def close(self) -> None:
        with self._wake:
            self._closing = True
            for job in [*self._waiting, *([self._current] if self._current else [])]:
                job.cancel()
            self._wake.notify()
        self._thread.join()
        self.model.close()

    def _drop_cancelled(self) -> None:
        """Free the places of waiting requests whose callers went away."""
        for job in [j for j in self._waiting if j.cancelled.is_set()]:
            self._waiting.remove(job)
            job.emit(_END)

    def _next(self) -> GenerationStream | None:
        with self._wake:
            while not self._waiting and not self._closing:
                self._wake.wait()
            return self._waiting.popleft() if self._waiting else None

    def _run(self) -> None:
        while (job := self._next()) is not None:
            self._current = job
            if not job.cancelled.is_set():
                try:
                    for chunk in self.model.generate(
                        job.prompt.tokens, job.prompt.params, job.cancelled
                    ):
                        job.emit(chunk)
                except Exception as exc:  # delivered to the caller, who re-raises it
                    job.emit(exc)
            job.emit(_END)


class Engine:
    """Loads models from the store and streams their generations."""

    def __init__(
        self, settings: Settings, store: Store | None = None, backend: str | Backend | None = None
    ) -> None:
        self.settings = settings
        self.store = store or Store(settings.store_dir)
        self._backend = backend or DEFAULT_BACKEND
        self._loaded: dict[str, LoadedEntry] = {}
        self._load_lock = threading.Lock()

    # --- models --------------------------------------------------------------------------

    def resolve(self, name: str | None) -> Manifest:
        return self.store.resolve(ModelRef.parse(name or self.settings.default_model))

    def loaded(self) -> list[LoadedEntry]:
        return list(self._loaded.values())

    def load(self, name: str | None) -> LoadedEntry:
        """The model `name` names, loading it (and unloading any other) when needed."""
        manifest = self.resolve(name)
        with self._load_lock:
            entry = self._loaded.get(manifest.digest)
            if entry is not None:
                return entry
            path = self.store.verified_blob(manifest)
            for other in list(self._loaded):
                self._loaded.pop(other).close()
            backend = (
                get_backend(self._backend) if isinstance(self._backend, str) else self._backend
            )
            ctx = self.settings.ctx_tokens
            if manifest.facts and manifest.facts.ctx_train_tokens:
                ctx = min(ctx, manifest.facts.ctx_train_tokens)
            options = LoadOptions(
                ctx_tokens=ctx, threads=self.settings.threads, gpu_layers=self.settings.gpu_layers
            )
            entry = LoadedEntry(manifest, backend.name, backend.load(path, options), max_queue=16)
            self._loaded[manifest.digest] = entry
            return entry

    def close(self) -> None:
        with self._load_lock:
            while self._loaded:
                self._loaded.popitem()[1].close()

    # --- prompts -------------------------------------------------------------------------

    def prepare_chat(
        self, name: str | None, messages: Sequence[ChatMessage], params: SamplingParams
    ) -> PreparedPrompt:
        entry = self.load(name)
        return self._prepare(entry, entry.model.render_chat(messages), params)

    def prepare_text(self, name: str | None, prompt: str, params: SamplingParams) -> PreparedPrompt:
        return self._prepare(self.load(name), prompt, params)

    def _prepare(self, entry: LoadedEntry, text: str, params: SamplingParams) -> PreparedPrompt:
        tokens = tuple(entry.model.tokenize(text))
        ctx = entry.model.ctx_tokens
        if len(tokens) >= ctx:
            raise ContextLengthExceededError(len(tokens), ctx)
        room = ctx - len(tokens)
        limit = min(params.max_tokens or room, room, self.settings.max_tokens_limit)
        if limit != params.max_tokens:
            params = SamplingParams(**{**params.__dict__, "max_tokens": limit})
        return PreparedPrompt(entry, tokens, params)

    # --- generation ----------------------------------------------------------------------

    def start(self, prompt: PreparedPrompt) -> GenerationStream:
        """Queue a generation now (raising `EngineBusyError` at once when the queue is full).

        Called from a coroutine, the stream is bound to that event loop for `async for`.
        """
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        stream = GenerationStream(prompt, loop)
        prompt.model.submit(stream)
        return stream

    async def stream(self, prompt: PreparedPrompt) -> AsyncIterator[GenerationChunk]:
        """Start a generation and yield its chunks; closing the iterator cancels it."""
        started = self.start(prompt)
        try:
            async for chunk in started:
                yield chunk
        finally:
            started.cancel()

    def stream_sync(self, prompt: PreparedPrompt) -> Iterator[GenerationChunk]:
        """The same for synchronous callers (the CLI)."""
        started = self.start(prompt)
        try:
            yield from started
        finally:
            started.cancel()


def _unwrap(item: object) -> GenerationChunk | None:
    """A worker's message as a chunk; None at the end; an exception is raised here."""
    if item is _END:
        return None
    if isinstance(item, BaseException):
        raise item
    assert isinstance(item, GenerationChunk)
    return item

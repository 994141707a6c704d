"""The engine: loads stored models on demand and streams generations to async callers.

Each loaded model gets one worker thread that runs its generations in order (a llama.cpp context
is not thread-safe); callers wait in a bounded queue and get `EngineBusyError` when it is full.
A caller that stops reading cancels its generation at the next token.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field

from llmedge.backends import LoadedModel, LoadOptions, get_backend
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


@dataclass
class _Job:
    prompt: PreparedPrompt
    emit: Callable[[object], None]
    cancel: threading.Event = field(default_factory=threading.Event)


class LoadedEntry:
    """A model in memory with the worker thread that runs its generations."""

    def __init__(
        self, manifest: Manifest, backend: str, model: LoadedModel, max_queue: int
    ) -> None:
        self.manifest = manifest
        self.backend = backend
        self.model = model
        self._jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(
            target=self._run, name=f"llmedge-{manifest.ref}", daemon=True
        )
        self._thread.start()

    def submit(self, job: _Job) -> None:
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            waiting = self._jobs.maxsize
            raise EngineBusyError(
                f"model {self.manifest.ref} has {waiting} requests waiting; retry shortly"
            ) from None

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join()
        self.model.close()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            if job.cancel.is_set():
                continue
            try:
                for chunk in self.model.generate(job.prompt.tokens, job.prompt.params, job.cancel):
                    job.emit(chunk)
            except Exception as exc:  # delivered to the caller, who re-raises it
                job.emit(exc)
            job.emit(_END)


class Engine:
    """Loads models from the store and streams their generations."""

    def __init__(
        self, settings: Settings, store: Store | None = None, backend: str | None = None
    ) -> None:
        self.settings = settings
        self.store = store or Store(settings.store_dir)
        self.backend_name = backend or DEFAULT_BACKEND
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
            backend = get_backend(self.backend_name)
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

    async def stream(self, prompt: PreparedPrompt) -> AsyncIterator[GenerationChunk]:
        """Chunks of the generation; closing the iterator early cancels it."""
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[object] = asyncio.Queue()

        def emit(item: object) -> None:
            loop.call_soon_threadsafe(inbox.put_nowait, item)

        job = _Job(prompt, emit)
        prompt.model.submit(job)
        try:
            while (chunk := _unwrap(await inbox.get())) is not None:
                yield chunk
        finally:
            job.cancel.set()

    def stream_sync(self, prompt: PreparedPrompt) -> Iterator[GenerationChunk]:
        """The same stream for synchronous callers (the CLI)."""
        inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        job = _Job(prompt, inbox.put)
        prompt.model.submit(job)
        try:
            while (chunk := _unwrap(inbox.get())) is not None:
                yield chunk
        finally:
            job.cancel.set()


def _unwrap(item: object) -> GenerationChunk | None:
    """A worker's message as a chunk; None at the end; an exception is raised here."""
    if item is _END:
        return None
    if isinstance(item, BaseException):
        raise item
    assert isinstance(item, GenerationChunk)
    return item

"""The engine: loads stored models on demand, keeps them while used, streams generations.

Each loaded model gets one worker thread per sequence it decodes at once; callers wait in a
bounded line and get `EngineBusyError` when it is full. A caller that stops reading cancels its
generation at the next token. Several models stay loaded while memory allows: loading one that
does not fit unloads the least recently used idle ones first, and a model idle for longer than
its keep-alive is unloaded.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import replace
from typing import Any

from llmedge.backends import Backend, LoadOptions, get_backend
from llmedge.engine.runner import LoadedEntry, PreparedPrompt
from llmedge.engine.stream import GenerationStream
from llmedge.errors import (
    BackendUnavailableError,
    ContextLengthExceededError,
    InsufficientMemoryError,
    InvalidRequestError,
)
from llmedge.fit import ensure_fits, options_for
from llmedge.generation import ChatMessage, GenerationChunk, SamplingParams
from llmedge.routing import REMOTE, RouteDecision, route_model
from llmedge.settings import Settings
from llmedge.store import Manifest, ModelRef, Store


class Engine:
    """Loads models from the store and streams their generations.

    `backend` names the backend for every model; by default the router picks one per model
    and host (`llmedge route MODEL` explains the choice). A Backend object is used as given.
    """

    def __init__(
        self, settings: Settings, store: Store | None = None, backend: str | Backend | None = None
    ) -> None:
        self.settings = settings
        self.store = store or Store(settings.store_dir)
        self._backend = backend
        self._loaded: dict[str, LoadedEntry] = {}
        self._load_lock = threading.Lock()
        self._closed = threading.Event()
        self._reaper = threading.Thread(target=self._reap, name="llmedge-reaper", daemon=True)
        self._reaper.start()

    # --- models --------------------------------------------------------------------------

    def resolve(self, name: str | None) -> Manifest:
        ref = ModelRef.parse(name or self.settings.default_model)
        if ref.tag is None and (self._backend is None or isinstance(self._backend, str)):
            formats = {m.format for m in self.store.manifests() if m.name == ref.name}
            if len(formats) > 1:  # e.g. GGUF and MLX versions: the router picks one
                chosen = self.route(str(ref)).artifact
                if chosen is not None and chosen.stored:
                    return self.store.resolve(ModelRef.parse(chosen.ref))
        return self.store.resolve(ref)

    @property
    def backend_name(self) -> str | None:
        """The backend named for every model (None: the router picks one per model)."""
        if self._backend is None or isinstance(self._backend, str):
            return self._backend
        return self._backend.name

    def route(self, name: str | None, check_memory: bool = True) -> RouteDecision:
        """Which backend would run the model `name` names on this host now, and why."""
        override = self._backend if isinstance(self._backend, str) else None
        model = name or self.settings.default_model
        return route_model(
            self.settings, self.store, model, override=override, check_memory=check_memory
        )

    def _backend_for(self, manifest: Manifest) -> Backend:
        if self._backend is not None and not isinstance(self._backend, str):
            return self._backend
        decision = self.route(manifest.ref, check_memory=False)  # memory: the guard in _load
        decision.raise_if_refused()
        if decision.backend is None or decision.backend == REMOTE:
            raise BackendUnavailableError(
                f"{manifest.ref} is routed to the remote engine, which only "
                "`llmedge serve --remote URL` forwards requests to"
            )
        return get_backend(decision.backend)

    def loaded(self) -> list[LoadedEntry]:
        return list(self._loaded.values())

    def load(self, name: str | None, keep_alive_s: float | None = None) -> LoadedEntry:
        """The model `name` names, loaded now if it is not in memory.

        `keep_alive_s` sets how long it stays loaded once idle (default: the settings').
        """
        manifest = self.resolve(name)
        with self._load_lock:
            entry = self._loaded.get(manifest.digest)
            if entry is None:
                entry = self._load(manifest, self.settings.keep_alive_s)
                self._loaded[manifest.digest] = entry
            if keep_alive_s is not None:  # the last request to say so sets the model's timer
                entry.keep_alive_s = keep_alive_s
            entry.last_used = time.monotonic()
            return entry

    def _load(self, manifest: Manifest, keep_alive_s: float) -> LoadedEntry:
        path = self.store.verified_blob(manifest)
        backend = self._backend_for(manifest)
        ctx = self.settings.ctx_tokens
        if manifest.facts and manifest.facts.ctx_train_tokens:
            ctx = min(ctx, manifest.facts.ctx_train_tokens)
        kv_k, kv_v = self.settings.kv_types
        options = LoadOptions(
            ctx_tokens=ctx,
            threads=self.settings.threads,
            gpu_layers=self.settings.gpu_layers,
            parallel=self.settings.parallel,
            kv_type_k=kv_k,
            kv_type_v=kv_v,
            flash_attn=self.settings.flash_attn,
        )
        while len(self._loaded) >= self.settings.max_loaded_models and self._evict_one():
            pass
        while manifest.format == "gguf":  # refuse, with numbers, what the OS would kill
            fit = options_for(self.settings, ctx_tokens=ctx, gpu_layers=options.gpu_layers)
            try:
                layers = ensure_fits(path, fit, self.settings.memory_budget_bytes, manifest.name)
            except InsufficientMemoryError:
                if not self._evict_one():  # unloading an idle model may make room
                    raise
            else:
                options = replace(options, gpu_layers=layers)  # load what the check approved
                break
        model = backend.load(path, options)
        return LoadedEntry(manifest, backend.name, model, self.settings.max_queue, keep_alive_s)

    def _evict_one(self) -> bool:
        """Unload the least recently used idle model; False when every model is busy."""
        idle = [(e.last_used, key) for key, e in self._loaded.items() if not e.busy()]
        if not idle:
            return False
        self._loaded.pop(min(idle)[1]).close()
        return True

    def unload(self, name: str | None) -> bool:
        """Unload a model now (once its running generations end); False if it was not loaded."""
        manifest = self.resolve(name)
        with self._load_lock:
            entry = self._loaded.pop(manifest.digest, None)
        if entry is not None:
            entry.close()
        return entry is not None

    def _reap(self) -> None:
        while not self._closed.wait(1.0):
            with self._load_lock:
                now = time.monotonic()
                expired = [k for k, e in self._loaded.items() if e.idle_expired(now)]
                for key in expired:
                    self._loaded.pop(key).close()

    def close(self) -> None:
        self._closed.set()
        with self._load_lock:
            while self._loaded:
                self._loaded.popitem()[1].close()

    # --- prompts -------------------------------------------------------------------------

    def prepare_chat(
        self,
        name: str | None,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        tools: Sequence[dict[str, Any]] | None = None,
    ) -> PreparedPrompt:
        entry = self.load(name)
        return self._prepare(entry, entry.model.render_chat(messages, tools), params)

    def prepare_text(self, name: str | None, prompt: str, params: SamplingParams) -> PreparedPrompt:
        return self._prepare(self.load(name), prompt, params)

    def _prepare(self, entry: LoadedEntry, text: str, params: SamplingParams) -> PreparedPrompt:
        tokens = tuple(entry.model.tokenize(text))
        if not tokens:
            raise InvalidRequestError("the prompt is empty", param="prompt")
        ctx = entry.model.ctx_tokens
        if len(tokens) >= ctx:
            raise ContextLengthExceededError(len(tokens), ctx)
        room = ctx - len(tokens)
        limit = min(params.max_tokens or room, room, self.settings.max_tokens_limit)
        if limit != params.max_tokens:
            params = SamplingParams(**{**params.__dict__, "max_tokens": limit})
        return PreparedPrompt(entry, tokens, params)

    def embed(self, name: str | None, texts: Sequence[str]) -> tuple[list[list[float]], int]:
        """Embedding vectors for `texts` from the model `name` names, and the tokens used."""
        if not texts or any(not text for text in texts):
            raise InvalidRequestError("there is an empty input to embed", param="input")
        return self.load(name).model.embed(texts)

    # --- generation ----------------------------------------------------------------------

    def start(self, prompt: PreparedPrompt) -> GenerationStream:
        """Queue a generation now (raising `EngineBusyError` at once when the queue is full).

        Called from a coroutine, the stream is bound to that event loop for `async for`.
        """
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        stream = GenerationStream(prompt.tokens, prompt.params, loop)
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

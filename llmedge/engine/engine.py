"""The engine: loads stored models on demand, keeps them while used, streams their generations.

Ownership, in one place: the engine's table (`ModelTable`) owns the loaded models. A caller
holds a `Lease` on one while it prepares a prompt or computes embeddings; a generation pins it
from submission to its end; only idle models are ever unloaded.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import replace
from typing import Any, Protocol

from llmedge.backends import Backend, get_backend
from llmedge.engine.runner import Lease, ModelRunner, PreparedPrompt
from llmedge.engine.stream import GenerationStream
from llmedge.engine.table import ModelTable
from llmedge.errors import (
    BackendUnavailableError,
    ContextLengthExceededError,
    InvalidRequestError,
)
from llmedge.generation import ChatMessage, GenerationChunk, SamplingParams
from llmedge.routing.facts import route_model
from llmedge.routing.router import REMOTE, RouteDecision
from llmedge.settings import Settings
from llmedge.store import Manifest, ModelRef, Store


class GenerationObserver(Protocol):
    """Told when each generation starts and how it ends (None: it failed or was cancelled)."""

    def generation_started(self) -> None: ...

    def generation_finished(self, last: GenerationChunk | None) -> None: ...


def check_token_ids(manifest: Manifest, tokens: Sequence[int], param: str) -> None:
    """Refuse token ids the model's vocabulary does not have (llama.cpp would read past it)."""
    facts = manifest.facts
    vocab = facts.vocab_size if facts and facts.vocab_size else None
    for token in tokens:
        if token < 0 or (vocab is not None and token >= vocab):
            ids = f"0 to {vocab - 1}" if vocab else "0 and up"
            raise InvalidRequestError(
                f"{param}: token id {token} is not in the model's vocabulary (ids {ids})",
                param=param,
            )


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
        self._routes: dict[str, tuple[tuple[tuple[str, str], ...], Manifest]] = {}
        self._routes_lock = threading.Lock()
        self._table = ModelTable(self.settings, self.store, self._backend_for)

    # --- which model ---------------------------------------------------------------------

    def resolve(self, name: str | None) -> Manifest:
        """The stored version `name` names. A name without a tag stored in several formats
        (GGUF and MLX, say) goes to the router, once per set of stored versions."""
        ref = ModelRef.parse(name or self.settings.default_model)
        if ref.tag is not None or not (self._backend is None or isinstance(self._backend, str)):
            return self.store.resolve(ref)
        versions = [m for m in self.store.manifests() if m.name == ref.name]
        if len({m.format for m in versions}) < 2:
            return self.store.resolve(ref)
        signature = tuple(sorted((m.ref, m.digest) for m in versions))
        with self._routes_lock:
            cached = self._routes.get(ref.name)
        if cached is not None and cached[0] == signature:
            return cached[1]
        chosen = self.route(str(ref)).artifact
        manifest = self.store.resolve(
            ModelRef.parse(chosen.ref) if chosen and chosen.stored else ref
        )
        with self._routes_lock:
            self._routes[ref.name] = (signature, manifest)
        return manifest

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

    # --- loading -------------------------------------------------------------------------

    def loaded(self) -> list[ModelRunner]:
        return self._table.loaded()

    def loading(self) -> int:
        """Models being loaded now."""
        return self._table.loading()

    def lease(self, name: str | None, keep_alive_s: float | None = None) -> Lease:
        """A lease on the model `name` names, loading it first if it is not in memory.

        `keep_alive_s` sets how long it stays loaded once idle (default: the settings').
        """
        return self._table.lease(self.resolve(name), keep_alive_s)

    def load(self, name: str | None, keep_alive_s: float | None = None) -> ModelRunner:
        """Load the model `name` names now (if it is not in memory); it stays while used."""
        with self.lease(name, keep_alive_s) as lease:
            return lease.runner

    def unload(self, name: str | None, wait: bool = False) -> bool:
        """Unload a model once its running generations end; until then it takes no new work
        (a retryable 503). False if it was not loaded. `wait` returns only once it is gone."""
        return self._table.unload(self.resolve(name), wait)

    def expire(self, name: str | None) -> bool:
        """Unload the model once it is idle, as a keep-alive of 0 does; a request before then
        keeps it (and sets its own keep-alive). False if it was not loaded."""
        return self._table.expire(self.resolve(name))

    def unload_idle(self, now: float | None = None) -> list[str]:
        """Unload the models whose keep-alive ran out by `now` (default: now), and the drained
        ones that fell idle; returns their references. The reaper does this every second."""
        return self._table.unload_idle(now)

    def close(self) -> None:
        """Unload every model; generations still running end with a retryable error."""
        self._table.close()

    # --- prompts -------------------------------------------------------------------------

    def prepare_chat(
        self,
        model: str | Lease | None,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        tools: Sequence[dict[str, Any]] | None = None,
        template: str | None = None,
    ) -> PreparedPrompt:
        """A conversation rendered through the model's chat template, ready to generate from.

        `model` is a name (leased here) or a lease, which passes to the prompt; on an error the
        lease is released. `template` replaces the model's own chat template."""
        lease = model if isinstance(model, Lease) else self.lease(model)
        try:
            text = lease.model.render_chat(messages, tools, template)
            return self._prepare(lease, lease.model.tokenize(text), params)
        except BaseException:
            lease.release()
            raise

    def prepare_text(
        self, model: str | Lease | None, prompt: str, params: SamplingParams
    ) -> PreparedPrompt:
        """A raw prompt, tokenized, ready to generate from (the lease as in `prepare_chat`)."""
        lease = model if isinstance(model, Lease) else self.lease(model)
        try:
            return self._prepare(lease, lease.model.tokenize(prompt), params)
        except BaseException:
            lease.release()
            raise

    def prepare_tokens(
        self, model: str | Lease | None, tokens: Sequence[int], params: SamplingParams
    ) -> PreparedPrompt:
        """A prompt given as token ids, used as they are (no BOS is added)."""
        lease = model if isinstance(model, Lease) else self.lease(model)
        try:
            check_token_ids(lease.manifest, tokens, "prompt")
            return self._prepare(lease, tokens, params)
        except BaseException:
            lease.release()
            raise

    def _prepare(
        self, lease: Lease, prompt: Sequence[int], params: SamplingParams
    ) -> PreparedPrompt:
        tokens = tuple(prompt)
        if not tokens:
            raise InvalidRequestError("the prompt is empty", param="prompt")
        check_token_ids(lease.manifest, [token for token, _ in params.logit_bias], "logit_bias")
        ctx = lease.model.ctx_tokens
        if len(tokens) >= ctx:
            raise ContextLengthExceededError(len(tokens), ctx)
        room = ctx - len(tokens)
        limit = min(params.max_tokens or room, room, self.settings.max_tokens_limit)
        if limit != params.max_tokens:
            params = replace(params, max_tokens=limit)
        return PreparedPrompt(lease, tokens, params)

    def embed(
        self,
        name: str | None,
        inputs: Sequence[str | Sequence[int]],
        truncate: bool = False,
        ctx_tokens: int | None = None,
        keep_alive_s: float | None = None,
    ) -> tuple[list[list[float]], int]:
        """Embedding vectors for `inputs` (texts or token ids) from the model `name` names, and
        the tokens used. An input longer than the context (or `ctx_tokens`, when smaller) is
        refused, or with `truncate` cut to its first tokens (as Ollama does)."""
        if not inputs or any(len(item) == 0 for item in inputs):
            raise InvalidRequestError("there is an empty input to embed", param="input")
        with self.lease(name, keep_alive_s) as lease:  # loaded until the vectors are made
            model = lease.model
            plain = ctx_tokens is None and all(isinstance(item, str) for item in inputs)
            if plain and not truncate:
                return model.embed(inputs)
            ctx = min(model.ctx_tokens, ctx_tokens or model.ctx_tokens)
            token_lists = []
            for item in inputs:
                tokens = model.tokenize(item) if isinstance(item, str) else list(item)
                check_token_ids(lease.manifest, tokens, "input")
                if len(tokens) > ctx and not truncate:
                    raise ContextLengthExceededError(len(tokens), ctx, param="input")
                token_lists.append(tokens[:ctx])
            return model.embed(token_lists)

    # --- generation ----------------------------------------------------------------------

    def start(
        self,
        prompt: PreparedPrompt,
        *,
        observer: GenerationObserver | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> GenerationStream:
        """Submit a generation now, or raise at once (`EngineBusyError` when the line is full,
        an `InvalidRequestError` the backend finds in it). The prompt keeps its lease: release
        it once every generation from it has started.

        The stream is bound to `loop` (default: the running one, if any) for `async for`.
        """
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
        stream = GenerationStream(prompt.tokens, prompt.params, loop)
        if observer is not None:
            observer.generation_started()
            stream.on_end(observer.generation_finished)
        prompt.model.submit(stream)
        return stream

    async def stream(self, prompt: PreparedPrompt) -> AsyncIterator[GenerationChunk]:
        """Start a generation and yield its chunks; closing the iterator cancels it."""
        with prompt:
            started = self.start(prompt)
        try:
            async for chunk in started:
                yield chunk
        finally:
            started.cancel()

    def stream_sync(self, prompt: PreparedPrompt) -> Iterator[GenerationChunk]:
        """The same for synchronous callers (the CLI)."""
        with prompt:
            started = self.start(prompt)
        try:
            yield from started
        finally:
            started.cancel()

"""The engine's table of loaded models, and their comings and goings.

The table owns each `ModelRunner`, by blob digest. Its lock guards only the table: a model loads
through its own future, outside the lock, so a cold load (hashing and reading a blob of
gigabytes) never holds up requests for another model, and concurrent requests for the model
being loaded wait for that one load. Only idle models go: keep-alive expired, evicted for room,
or drained by `unload`; a generation is never cut, except by `close()` at shutdown.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path

from llmedge.backends import Backend, LoadOptions
from llmedge.engine.runner import Lease, ModelRunner
from llmedge.errors import (
    EngineBusyError,
    InsufficientMemoryError,
    InvalidRequestError,
    ModelUnloadingError,
)
from llmedge.fit.guard import LoadPlan, ensure_fits
from llmedge.fit.memory import options_for
from llmedge.settings import AUTO_PARALLEL_MAX, Settings
from llmedge.store import Manifest, ModelRef, Store

# How often the reaper looks for models whose keep-alive ran out (it is also woken at once when
# a model falls idle, so a keep-alive of 0 unloads without waiting for this).
REAP_INTERVAL_S = 1.0
# `--parallel auto` for a model the guard cannot size (not GGUF: MLC's sequences; the serial
# backends decode one at a time whatever it says).
AUTO_PARALLEL_UNSIZED = 4


class ModelTable:
    """The loaded models, their loads in progress, and the reaper thread."""

    def __init__(
        self, settings: Settings, store: Store, backend_for: Callable[[Manifest], Backend]
    ) -> None:
        self.settings = settings
        self.store = store
        self._backend_for = backend_for
        self._lock = threading.Lock()
        self._runners: dict[str, ModelRunner] = {}
        self._loading: dict[str, Future[ModelRunner]] = {}
        self._closed = False
        self._wake = threading.Event()
        self._reaper = threading.Thread(target=self._reap, name="llmedge-reaper", daemon=True)
        self._reaper.start()

    def find(self, manifest: Manifest) -> ModelRunner | None:
        with self._lock:
            return self._runners.get(manifest.digest)

    def loaded(self) -> list[ModelRunner]:
        with self._lock:
            return list(self._runners.values())

    def loading(self) -> int:
        """Models being loaded now."""
        with self._lock:
            return len(self._loading)

    def lease(self, manifest: Manifest, keep_alive_s: float | None = None) -> Lease:
        """A lease on `manifest`'s model, loading it first if it is not in memory.

        `keep_alive_s` sets how long it stays loaded once idle (default: the settings').
        """
        while True:
            with self._lock:
                if self._closed:
                    raise ModelUnloadingError("the engine is shutting down")
                runner = self._runners.get(manifest.digest)
                if runner is not None:
                    return runner.lease(keep_alive_s, manifest)  # 503 while it drains
                future = self._loading.get(manifest.digest)
                loads_here = future is None
                if future is None:
                    future = self._loading[manifest.digest] = Future()
            if not loads_here:
                future.result()  # this load's error is every waiter's error
                continue
            return self._load_and_lease(manifest, future, keep_alive_s)

    def _load_and_lease(
        self, manifest: Manifest, future: Future[ModelRunner], keep_alive_s: float | None
    ) -> Lease:
        try:
            runner = self._load(manifest)
        except BaseException as exc:
            with self._lock:
                del self._loading[manifest.digest]
            future.set_exception(exc)
            raise
        lease = runner.lease(keep_alive_s, manifest)  # before anyone can see it idle
        with self._lock:
            del self._loading[manifest.digest]
            closed = self._closed
            if not closed:
                self._runners[manifest.digest] = runner
        future.set_result(runner)
        if closed:
            lease.release()
            runner.close()
            raise ModelUnloadingError("the engine is shutting down")
        return lease

    def _load(self, manifest: Manifest) -> ModelRunner:
        path = self.store.verified_blob(manifest)
        backend = self._backend_for(manifest)
        ctx = self.settings.ctx_tokens
        if manifest.facts and manifest.facts.ctx_train_tokens:
            ctx = min(ctx, manifest.facts.ctx_train_tokens)
        parallel = self.settings.parallel
        options = LoadOptions(
            ctx_tokens=ctx,
            threads=self.settings.threads,
            gpu_layers=self.settings.gpu_layers,
            parallel=AUTO_PARALLEL_UNSIZED if parallel == "auto" else parallel,
            preflight_dir=self.settings.preflight_dir,
            speculative=self.settings.speculative,
            draft_path=self._draft_path(),
            kv_type_k=self.settings.kv_types[0],
            kv_type_v=self.settings.kv_types[1],
            flash_attn=self.settings.flash_attn,
        )
        self._make_room(manifest)
        if manifest.format == "gguf":  # refuse, with numbers, what the OS would kill
            plan = self._fitting_plan(manifest, path, options)
            options = replace(options, gpu_layers=plan.gpu_layers, parallel=plan.parallel)
        model = backend.load(path, options)
        return ModelRunner(
            manifest,
            backend.name,
            model,
            max_queue=self.settings.max_queue,
            keep_alive_s=self.settings.keep_alive_s,
            on_idle=self._wake.set,
        )

    def _draft_path(self) -> Path | None:
        """The draft model's file (`--draft`), checked like any stored model."""
        if self.settings.draft is None:
            return None
        manifest = self.store.resolve(ModelRef.parse(self.settings.draft))
        if manifest.format != "gguf":
            raise InvalidRequestError(
                f"the draft model {manifest.ref} is {manifest.format}; it must be a GGUF model "
                "with the served model's vocabulary",
                param="draft",
            )
        return self.store.verified_blob(manifest)

    def _make_room(self, manifest: Manifest) -> None:
        """Unload idle models until this load keeps within `max_loaded_models`."""
        limit = self.settings.max_loaded_models
        while True:
            with self._lock:
                if len(self._runners) + len(self._loading) <= limit:
                    return
                victim = self._retire_idle()
            if victim is None:
                raise EngineBusyError(
                    f"{manifest.ref} cannot load now: {limit} models are loaded and answering "
                    "(at most --max-loaded-models at once); retry shortly"
                )
            victim.close()

    def _fitting_plan(self, manifest: Manifest, path: Path, options: LoadOptions) -> LoadPlan:
        """A plan that fits (GPU layers, and the slots of `--parallel auto`), unloading idle
        models to make memory."""
        fit = options_for(
            self.settings, ctx_tokens=options.ctx_tokens, gpu_layers=options.gpu_layers
        )
        budget = self.settings.memory_budget_bytes
        most = AUTO_PARALLEL_MAX if self.settings.parallel == "auto" else None
        while True:
            try:
                return ensure_fits(path, fit, budget, manifest.name, parallel_max=most)
            except InsufficientMemoryError:
                with self._lock:
                    victim = self._retire_idle()
                    others = len(self._runners)
                if victim is None and others:
                    raise EngineBusyError(
                        f"{manifest.ref} does not fit next to the {others} models answering "
                        "now; retry shortly, or lower --max-loaded-models"
                    ) from None
                if victim is None:
                    raise
                victim.close()

    def _retire_idle(self) -> ModelRunner | None:
        """Take the least recently used idle model off the table (the lock is held)."""
        for key, runner in sorted(self._runners.items(), key=lambda item: item[1].last_used):
            if runner.retire_if_idle():
                del self._runners[key]
                return runner
        return None

    def unload(self, manifest: Manifest, wait: bool = False) -> bool:
        """Unload a model once its running generations end; until then it takes no new work
        (a retryable 503). False if it was not loaded. `wait` returns only once it is gone."""
        runner = self.find(manifest)
        if runner is None:
            return False
        runner.drain()
        self._wake.set()  # the reaper frees it as soon as it is idle
        if wait:
            runner.wait_freed()
        return True

    def expire(self, manifest: Manifest) -> bool:
        """Unload the model once it is idle, as a keep-alive of 0 does; a request before then
        keeps it (and sets its own keep-alive). False if it was not loaded."""
        runner = self.find(manifest)
        if runner is None:
            return False
        runner.keep_alive_s = 0
        self._wake.set()
        return True

    def unload_idle(self, now: float | None = None) -> list[str]:
        """Unload the models whose keep-alive ran out by `now` (default: now), and the drained
        ones that fell idle; returns their references. The reaper calls this every second, and
        at once when a model falls idle."""
        now = time.monotonic() if now is None else now
        with self._lock:
            going = []
            for key, runner in list(self._runners.items()):
                due = runner.state == "draining" or runner.idle_expired(now)
                if due and runner.retire_if_idle():
                    del self._runners[key]
                    going.append(runner)
        for runner in going:
            runner.close()
        return [runner.manifest.ref for runner in going]

    def _reap(self) -> None:
        while True:
            self._wake.wait(REAP_INTERVAL_S)
            self._wake.clear()
            with self._lock:
                if self._closed:
                    return
            self.unload_idle()

    def close(self) -> None:
        """Unload every model; generations still running end with a retryable error."""
        with self._lock:
            self._closed = True
            runners = list(self._runners.values())
            self._runners.clear()
        self._wake.set()
        self._reaper.join()
        for runner in runners:
            runner.close()

"""A loaded model as the engine holds it: who uses it (leases and generations in flight), how long
it stays once idle (its keep-alive), and how it goes (drained, never cut).

Ownership: the engine's table owns each `ModelRunner`; a `Lease` pins one while a caller prepares
a prompt or computes embeddings; each generation in flight pins it from submission to its end.
Only an idle runner is retired (evicted, or unloaded for idleness), and retiring is one atomic
step under the runner's lock, so nothing can lease or submit to a runner that is going.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self

from llmedge.backends import LoadedModel
from llmedge.engine.stream import GenerationStream
from llmedge.errors import EngineBusyError, ModelUnloadingError
from llmedge.generation import GenerationChunk, SamplingParams
from llmedge.store import Manifest

State = Literal["ready", "draining", "closed"]


class ModelRunner:
    """A model in memory with its leases, its generations in flight and its waiting line.

    `capacity` bounds what it takes at once: one generation per sequence the model decodes
    together, plus `max_queue` waiting for one; past that a submission is `EngineBusyError`.
    """

    def __init__(
        self,
        manifest: Manifest,
        backend: str,
        model: LoadedModel,
        *,
        max_queue: int,
        keep_alive_s: float,
        on_idle: Callable[[], None] = lambda: None,
    ) -> None:
        self.manifest = manifest
        self.backend = backend
        self.model = model
        self.keep_alive_s = keep_alive_s  # negative: never unloaded for idleness
        self.capacity = max(1, model.parallel) + max_queue
        self.last_used = time.monotonic()
        self._on_idle = on_idle
        self._lock = threading.Condition()
        self._leases = 0
        self._in_flight = 0
        self._state: State = "ready"
        self._freed = threading.Event()

    # --- using it ------------------------------------------------------------------------

    def lease(self, keep_alive_s: float | None = None, manifest: Manifest | None = None) -> Lease:
        """Pin the model; `keep_alive_s` (when given) becomes its keep-alive. `manifest` is the
        name it was asked for (a created model shares its base's weights, not its defaults)."""
        with self._lock:
            self._check_open()
            self._leases += 1
            if keep_alive_s is not None:  # the last request to say so sets the model's timer
                self.keep_alive_s = keep_alive_s
            self.last_used = time.monotonic()
        return Lease(self, manifest or self.manifest)

    def submit(self, stream: GenerationStream) -> None:
        """Hand a generation to the model, or refuse it at once (busy, or unloading)."""
        with self._lock:
            self._check_open()
            if self._in_flight >= self.capacity:
                waiting = self.capacity - max(1, self.model.parallel)
                raise EngineBusyError(
                    f"model {self.manifest.ref} is answering {max(1, self.model.parallel)} "
                    f"requests with {waiting} more waiting; retry shortly"
                )
            self._in_flight += 1
        stream.on_end(self._generation_ended)
        try:
            self.model.submit(stream)
        except BaseException as exc:
            stream.fail(exc)  # ends it, which gives its place back
            raise

    def _check_open(self) -> None:
        if self._state != "ready":
            raise ModelUnloadingError(
                f"model {self.manifest.ref} is being unloaded; retry and it loads again"
            )

    def _release(self) -> None:
        with self._lock:
            self._leases -= 1
            self._used()

    def _generation_ended(self, _last: GenerationChunk | None) -> None:
        with self._lock:
            self._in_flight -= 1
            self._used()

    def _used(self) -> None:
        # Called with the lock held, whenever a lease or a generation ends.
        self.last_used = time.monotonic()
        if not self._leases and not self._in_flight:
            self._on_idle()

    # --- its state -----------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        with self._lock:
            return bool(self._leases or self._in_flight)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @property
    def state(self) -> State:
        with self._lock:
            return self._state

    def idle_expired(self, now: float) -> bool:
        """Idle for longer than its keep-alive."""
        with self._lock:
            idle = not self._leases and not self._in_flight
            return idle and self.keep_alive_s >= 0 and now - self.last_used >= self.keep_alive_s

    def expires_in_s(self) -> float | None:
        """Seconds until an idle unload (None: kept until evicted)."""
        if self.keep_alive_s < 0:
            return None
        return max(0.0, self.last_used + self.keep_alive_s - time.monotonic())

    # --- its end -------------------------------------------------------------------------

    def retire_if_idle(self) -> bool:
        """Close to new work if nothing uses it (True); the caller then closes the model."""
        with self._lock:
            if self._leases or self._in_flight or self._state == "closed":
                return False
            self._state = "closed"
            return True

    def drain(self) -> None:
        """Take no new leases or generations; the running ones go on to their end."""
        with self._lock:
            if self._state == "ready":
                self._state = "draining"

    def close(self) -> None:
        """Free the model. Generations still running (a shutdown) end with an error."""
        with self._lock:
            self._state = "closed"
        try:
            self.model.close()
        finally:
            self._freed.set()

    def wait_freed(self, timeout_s: float | None = None) -> bool:
        """Wait until the model is freed; False if `timeout_s` passed first."""
        return self._freed.wait(timeout_s)


class _Released:
    """A hold released on leaving its `with` block."""

    def release(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class Lease(_Released):
    """A hold on a loaded model: while one is held the model stays loaded.

    Release it once (leaving a `with` block does); a lease collected unreleased releases then.
    """

    def __init__(self, runner: ModelRunner, manifest: Manifest) -> None:
        self.runner = runner
        self.manifest = manifest  # the model asked for: its name, defaults and facts
        self._release = weakref.finalize(self, runner._release)

    @property
    def model(self) -> LoadedModel:
        return self.runner.model

    @property
    def released(self) -> bool:
        return not self._release.alive

    def release(self) -> None:
        self._release()  # runs at most once


@dataclass(eq=False)
class PreparedPrompt(_Released):
    """A prompt checked against the model's context, ready to generate from; it holds a lease on
    the model until it is released (after its generations have started, or if none will)."""

    lease: Lease
    tokens: tuple[int, ...]
    params: SamplingParams

    @property
    def model(self) -> ModelRunner:
        return self.lease.runner

    def release(self) -> None:
        self.lease.release()

"""A loaded model with the worker threads that run its generations, and its waiting line."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from llmedge.backends import LoadedModel
from llmedge.engine.stream import END, GenerationStream
from llmedge.errors import EngineBusyError
from llmedge.generation import SamplingParams
from llmedge.store import Manifest


@dataclass(frozen=True)
class PreparedPrompt:
    """A prompt checked against the model's context, ready to generate from."""

    model: LoadedEntry
    tokens: tuple[int, ...]
    params: SamplingParams


class LoadedEntry:
    """A model in memory with the worker thread that runs its generations."""

    def __init__(
        self,
        manifest: Manifest,
        backend: str,
        model: LoadedModel,
        max_queue: int,
        keep_alive_s: float,
    ) -> None:
        self.manifest = manifest
        self.backend = backend
        self.model = model
        self.max_queue = max_queue
        self.keep_alive_s = keep_alive_s  # negative: never unload for idleness
        self.last_used = time.monotonic()
        self._waiting: deque[GenerationStream] = deque()
        self._wake = threading.Condition()
        self._closing = False
        self._current: set[GenerationStream] = set()
        # One thread per sequence the model can decode at once; each runs one generation.
        self._threads = [
            threading.Thread(target=self._run, name=f"llmedge-{manifest.ref}-{i}", daemon=True)
            for i in range(max(1, model.parallel))
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, job: GenerationStream) -> None:
        with self._wake:
            capacity = len(self._threads) + self.max_queue
            if len(self._waiting) + len(self._current) >= capacity:
                self._drop_cancelled()
            if len(self._waiting) + len(self._current) >= capacity:
                raise EngineBusyError(
                    f"model {self.manifest.ref} is answering {len(self._threads)} requests with "
                    f"{self.max_queue} more waiting; retry shortly"
                )
            self._waiting.append(job)
            self._wake.notify()

    def close(self) -> None:
        with self._wake:
            self._closing = True
            for job in [*self._waiting, *self._current]:
                job.cancel()
            self._wake.notify_all()
        for thread in self._threads:
            thread.join()
        self.model.close()

    def busy(self) -> bool:
        with self._wake:
            return bool(self._waiting or self._current)

    def idle_expired(self, now: float) -> bool:
        """Idle for longer than its keep-alive."""
        return (
            self.keep_alive_s >= 0 and not self.busy() and now - self.last_used > self.keep_alive_s
        )

    def expires_in_s(self) -> float | None:
        """Seconds until an idle unload (None: kept until evicted)."""
        if self.keep_alive_s < 0:
            return None
        return max(0.0, self.last_used + self.keep_alive_s - time.monotonic())

    def _drop_cancelled(self) -> None:
        """Free the places of waiting requests whose callers went away."""
        for job in [j for j in self._waiting if j.cancelled.is_set()]:
            self._waiting.remove(job)
            job.emit(END)

    def _next(self, done: GenerationStream | None) -> GenerationStream | None:
        with self._wake:
            if done is not None:
                self._current.discard(done)
                self.last_used = time.monotonic()
            while not self._waiting and not self._closing:
                self._wake.wait()
            job = self._waiting.popleft() if self._waiting else None
            if job is not None:
                self._current.add(job)
            return job

    def _run(self) -> None:
        job = None
        while (job := self._next(job)) is not None:
            if not job.cancelled.is_set():
                try:
                    for chunk in self.model.generate(job.tokens, job.params, job.cancelled):
                        job.emit(chunk)
                except Exception as exc:  # delivered to the caller, who re-raises it
                    job.emit(exc)
            job.emit(END)

"""A generation in flight: one backend thread writes it, one caller reads it."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator

from llmedge.errors import GenerationCancelledError
from llmedge.generation import GenerationChunk, SamplingParams

log = logging.getLogger("llmedge.engine")

# Told how a generation ended: its last chunk, or None when it failed or was cancelled.
EndHook = Callable[[GenerationChunk | None], None]


class GenerationStream:
    """A submitted generation: what a backend writes into (`llmedge.backends.GenerationSink`).

    The backend calls `put` with each chunk (the one with a finish reason is the last) or `fail`
    with an error; whichever ends the stream first ends it exactly once, later calls are ignored,
    and the end hooks run then. The caller iterates the stream, plainly or with `async for` when
    it was started inside an event loop; `cancel()` ends it at once and asks the backend to stop
    at its next token, and leaving an iteration early cancels too. A stream whose event loop is
    gone cancels itself instead of failing the thread that writes it.
    """

    def __init__(
        self,
        tokens: tuple[int, ...],
        params: SamplingParams,
        loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        self.tokens = tokens
        self.params = params
        self.cancel_event = threading.Event()
        self.cancelled_at: float | None = None  # monotonic time of the first cancel()
        self._loop = loop
        self._ready = threading.Condition()
        self._items: deque[GenerationChunk | BaseException] = deque()
        self._ended = False
        self._last: GenerationChunk | None = None
        self._end_hooks: list[EndHook] = []
        self._waiter: asyncio.Future[None] | None = None

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    @property
    def ended(self) -> bool:
        with self._ready:
            return self._ended

    def on_end(self, hook: EndHook) -> None:
        """Call `hook` once when the stream ends (at once, if it has)."""
        with self._ready:
            if not self._ended:
                self._end_hooks.append(hook)
                return
            last = self._last
        hook(last)

    def cancel(self) -> None:
        """Stop it: the stream ends now (its place in the line is free at once), and the
        backend stops computing it at its next token."""
        if self.cancelled_at is None:
            self.cancelled_at = time.monotonic()
        self.cancel_event.set()
        self.fail(GenerationCancelledError("the generation was cancelled"))

    # --- the backend's side --------------------------------------------------------------

    def put(self, chunk: GenerationChunk) -> None:
        """A step of the answer; the chunk with a finish reason ends the stream."""
        self._deliver(chunk, ends=chunk.finish_reason is not None)

    def fail(self, error: BaseException) -> None:
        """End the stream with an error, which the reader raises."""
        self._deliver(error, ends=True)

    def _deliver(self, item: GenerationChunk | BaseException, ends: bool) -> None:
        with self._ready:
            if self._ended:
                return
            self._items.append(item)
            self._ended = ends
            if ends and isinstance(item, GenerationChunk):
                self._last = item
            hooks, self._end_hooks = (self._end_hooks, []) if ends else ([], self._end_hooks)
            waiter, self._waiter = self._waiter, None
            self._ready.notify()
        if waiter is not None:
            self._wake(waiter)
        last = item if ends and isinstance(item, GenerationChunk) else None
        for hook in hooks:
            try:
                hook(last)
            except Exception:  # a hook's failure must not reach the backend's thread
                log.exception("a generation's end hook failed")

    def _wake(self, waiter: asyncio.Future[None]) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(_resolve, waiter)
        except RuntimeError:  # the reader's event loop is closed: nobody will read on
            self.cancel()

    # --- the reader's side ---------------------------------------------------------------

    def __iter__(self) -> Iterator[GenerationChunk]:
        try:
            while True:
                with self._ready:
                    while not self._items:
                        self._ready.wait()
                    item = self._items.popleft()
                chunk = _unwrap(item)
                yield chunk
                if chunk.finish_reason is not None:
                    return
        finally:
            self.cancel()

    async def __aiter__(self) -> AsyncIterator[GenerationChunk]:
        if self._loop is None:
            raise RuntimeError("this stream was started outside an event loop; iterate it plainly")
        try:
            while True:
                with self._ready:
                    item = self._items.popleft() if self._items else None
                    if item is None:
                        waiter = self._waiter = self._loop.create_future()
                if item is None:
                    await waiter
                    continue
                chunk = _unwrap(item)
                yield chunk
                if chunk.finish_reason is not None:
                    return
        finally:
            self.cancel()


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _unwrap(item: GenerationChunk | BaseException) -> GenerationChunk:
    if isinstance(item, BaseException):
        raise item
    return item

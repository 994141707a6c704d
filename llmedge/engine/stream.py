"""A generation in flight: chunks pass from a model's worker thread to one reader."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Iterator

from llmedge.generation import GenerationChunk, SamplingParams

END = object()  # the worker's last message on a stream


class GenerationStream:
    """A submitted generation. Iterate it (plainly or with `async for`) for its chunks;
    `cancel()` stops it at the next token, and leaving an iteration early cancels it too."""

    def __init__(
        self,
        tokens: tuple[int, ...],
        params: SamplingParams,
        loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        self.tokens = tokens
        self.params = params
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
            while (chunk := unwrap(self._inbox.get())) is not None:
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
                if (chunk := unwrap(item)) is None:
                    return
                yield chunk
        finally:
            self.cancel()


def unwrap(item: object) -> GenerationChunk | None:
    """A worker's message as a chunk; None at the end; an exception is raised here."""
    if item is END:
        return None
    if isinstance(item, BaseException):
        raise item
    assert isinstance(item, GenerationChunk)
    return item

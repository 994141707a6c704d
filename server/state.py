"""What the routes share: the engine, the metrics, and which models are loading right now."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from llmedge import Engine
from server.metrics import Metrics

T = TypeVar("T")


class ServerState:
    """One per app (kept on `app.state.llmedge`)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.metrics = Metrics()
        self._lock = threading.Lock()
        self._loading = 0

    @property
    def loading(self) -> int:
        """Models being loaded now; /health answers 503 while there are any."""
        return self._loading

    async def run(self, model: str | None, work: Callable[[], T]) -> T:
        """Run blocking engine work (resolving, loading, tokenizing) off the event loop, counted
        as a load while the model it needs is not in memory yet."""

        def tracked() -> T:
            manifest = self.engine.resolve(model)
            loads = all(e.manifest.digest != manifest.digest for e in self.engine.loaded())
            if loads:
                with self._lock:
                    self._loading += 1
            try:
                return work()
            finally:
                if loads:
                    with self._lock:
                        self._loading -= 1

        return await run_in_threadpool(tracked)


def server_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.llmedge
    return state

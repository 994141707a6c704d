"""What the routes share: the engine and the metrics, and the way a request starts its work."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from llmedge import Engine
from server.chat_runner import ChoiceRun, Prepared
from server.metrics import Metrics

T = TypeVar("T")


class ServerState:
    """One per app (kept on `app.state.llmedge`)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.metrics = Metrics()

    async def run(self, work: Callable[[], T]) -> T:
        """Blocking engine work (resolving, loading, tokenizing), off the event loop."""
        return await run_in_threadpool(work)

    async def start(self, prepare: Callable[[], Prepared], n: int = 1) -> ChoiceRun:
        """Prepare a request and start its `n` generations, off the event loop: both block
        (loading the model, tokenizing, building a grammar). A refusal raises here, before the
        answer's first byte."""
        loop = asyncio.get_running_loop()
        return await run_in_threadpool(
            lambda: ChoiceRun(self.engine, prepare(), n, self.metrics, loop)
        )


def server_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.llmedge
    return state

"""Streamed answers (SSE, NDJSON) that stop their generations when the answer ends, however it
ends: finished, failed, or the client gone, even before the first byte was sent."""

from __future__ import annotations

from typing import Any, Protocol

from fastapi.responses import StreamingResponse
from sse_starlette import EventSourceResponse
from starlette.types import Receive, Scope, Send


class Run(Protocol):
    """What an answer's generations are (a `ChoiceRun`, or several): they can be stopped."""

    def cancel(self) -> None: ...


class RunEvents(EventSourceResponse):
    """Server-sent events over a run."""

    def __init__(self, content: Any, run: Run, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._run = run

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:  # an iterator that never started has no `finally` of its own to run
            self._run.cancel()


class RunLines(StreamingResponse):
    """Newline-delimited JSON over a run (the Ollama API)."""

    def __init__(self, content: Any, run: Run, media_type: str) -> None:
        super().__init__(content, media_type=media_type)
        self._run = run

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._run.cancel()

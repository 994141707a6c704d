"""The worker processes chat templates render in, and the limits they render under.

A template that loops forever, builds a gigabyte string or raises is the model file's doing, and
must cost the server one refused request, never its memory, its threads or its life: each render
goes to a worker process (`llmedge.prompting.template_worker`); one that takes longer than
RENDER_TIMEOUT_S is killed and replaced, and its request fails. Workers are started on first
use, kept for the next renders (up to MAX_WORKERS at once, for renders that run in parallel),
and end with this process.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import queue
import subprocess
import sys
import threading
from functools import cache
from pathlib import Path
from typing import Any

from llmedge.prompting.template_worker import read_message, write_message

RENDER_TIMEOUT_S = 5.0
MAX_OUTPUT_CHARS = 32 << 20
MEMORY_LIMIT_BYTES = 512 << 20
MAX_WORKERS = 4


class RenderFailed(Exception):
    """A render that did not produce text: `kind` is refused, failed, too_long or timeout."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class _Worker:
    """One worker process and the thread that reads its answers."""

    def __init__(self) -> None:
        command = [sys.executable, "-m", __package__ + ".template_worker", str(MEMORY_LIMIT_BYTES)]
        root = str(Path(__file__).resolve().parents[2])  # this llmedge, wherever it starts
        python_path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": python_path},
        )
        self.answers: queue.SimpleQueue[Any] = queue.SimpleQueue()
        threading.Thread(target=self._read, name="llmedge-template-reader", daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        try:
            while (answer := read_message(self.process.stdout)) is not None:
                self.answers.put(answer)
        except (OSError, ValueError):
            pass
        self.answers.put(None)  # the worker is gone

    def render(self, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        assert self.process.stdin is not None
        try:
            write_message(self.process.stdin, request)
        except OSError:
            raise RenderFailed("failed", "the template worker stopped") from None
        try:
            answer = self.answers.get(timeout=timeout_s)
        except queue.Empty:
            raise RenderFailed("timeout", f"it ran for more than {timeout_s:g} s") from None
        if answer is None:  # killed mid-render: the memory cap is the usual cause
            raise RenderFailed("too_long", "its worker died (out of the memory templates get?)")
        result: dict[str, Any] = answer
        return result

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.process.kill()
        self.process.wait()


class TemplateSandbox:
    """A small pool of template workers shared by every chat template of this process."""

    def __init__(self, max_workers: int = MAX_WORKERS) -> None:
        self._idle: list[_Worker] = []
        self._started = 0
        self._max_workers = max_workers
        self._free = threading.Condition()
        atexit.register(self.close)

    def _take(self) -> _Worker:
        with self._free:
            while not self._idle and self._started >= self._max_workers:
                self._free.wait()
            if self._idle:
                return self._idle.pop()
            self._started += 1
        try:
            return _Worker()
        except OSError:
            with self._free:
                self._started -= 1
                self._free.notify()
            raise

    def _give_back(self, worker: _Worker | None) -> None:
        with self._free:
            if worker is None:
                self._started -= 1
            else:
                self._idle.append(worker)
            self._free.notify()

    def render(self, request: dict[str, Any], timeout_s: float = RENDER_TIMEOUT_S) -> str:
        """The text `request` renders to; `RenderFailed` when the template fails or overruns."""
        worker: _Worker | None = self._take()
        assert worker is not None
        try:
            answer = worker.render(request, timeout_s)
        except RenderFailed:
            worker.stop()
            worker = None
            raise
        finally:
            self._give_back(worker)
        if "text" not in answer:
            raise RenderFailed(answer.get("kind", "failed"), answer.get("error", "unknown"))
        return str(answer["text"])

    def close(self) -> None:
        with self._free:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.stop()


@cache
def sandbox() -> TemplateSandbox:
    """This process's template workers, started on first use."""
    return TemplateSandbox()

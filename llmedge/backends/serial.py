"""The submission path of the backends that decode one sequence per call (MLX, transformers, and
MLC, whose server batches on its side): worker threads take the generations in the order they came
and write each one's chunks straight into its stream. MLX and transformers have one worker."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence

from llmedge.backends.base import GenerationSink
from llmedge.errors import (
    ContextLengthExceededError,
    DecodeError,
    GenerationCancelledError,
    InvalidRequestError,
    ModelUnloadingError,
)
from llmedge.generation import GenerationChunk, SamplingParams

# A backend's generation: the chunks for a prompt; it returns early once `cancel` is set.
Generate = Callable[[Sequence[int], SamplingParams, threading.Event], Iterator[GenerationChunk]]


def refuse_unservable(
    job: GenerationSink, ctx_tokens: int, backend: str, logprobs: bool = True
) -> None:
    """What these backends refuse before queueing `job`: a grammar (they cannot constrain a
    sampler), logprobs where they cannot return them, a prompt that fills the context."""
    if job.params.grammar is not None or (job.params.logprobs and not logprobs):
        what = "grammars (response_format, a required tool call)" + (
            "" if logprobs else " or logprobs"
        )
        raise InvalidRequestError(
            f"the {backend} backend does not take {what}; serve the model's GGUF version "
            "(`--backend llama.cpp`) for them",
            param="response_format" if job.params.grammar is not None else "logprobs",
        )
    if len(job.tokens) >= ctx_tokens:
        raise ContextLengthExceededError(len(job.tokens), ctx_tokens)


class SerialQueue:
    """A model's waiting line and the `workers` threads that work through it."""

    def __init__(self, generate: Generate, name: str, workers: int = 1) -> None:
        self._generate = generate
        self._waiting: deque[GenerationSink] = deque()
        self._wake = threading.Condition()
        self._closed = False
        self._running: set[GenerationSink] = set()
        self._threads = [
            threading.Thread(target=self._run, name=f"llmedge-{name}-{i}", daemon=True)
            for i in range(max(1, workers))
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, job: GenerationSink) -> None:
        with self._wake:
            if self._closed:
                raise ModelUnloadingError("the model is being unloaded; retry")
            self._waiting.append(job)
            self._wake.notify()

    def close(self) -> None:
        """Stop the worker; whatever is still running or waiting ends with an error."""
        with self._wake:
            self._closed = True
            ending = [*self._waiting, *self._running]
            self._waiting.clear()
            self._wake.notify_all()
        for job in ending:
            job.fail(ModelUnloadingError("the model was unloaded; retry and it loads again"))
            job.cancel_event.set()  # a running one stops at its next token
        for thread in self._threads:
            thread.join()

    def _next(self, done: GenerationSink | None) -> GenerationSink | None:
        with self._wake:
            self._running.discard(done)
            while not self._waiting and not self._closed:
                self._wake.wait()
            job = self._waiting.popleft() if self._waiting else None
            if job is not None:
                self._running.add(job)
            return job

    def _run(self) -> None:
        job = None
        while (job := self._next(job)) is not None:
            if job.cancelled:
                job.fail(GenerationCancelledError("the request was cancelled before it started"))
                continue
            run(self._generate, job)


def run(generate: Generate, job: GenerationSink) -> None:
    """Write one generation into `job`; it always ends, with a finish reason or an error."""
    try:
        for chunk in generate(job.tokens, job.params, job.cancel_event):
            job.put(chunk)
            if chunk.finish_reason is not None:
                return
    except Exception as exc:
        job.fail(exc)
        return
    if job.cancelled:
        job.fail(GenerationCancelledError("the generation was cancelled"))
    else:
        job.fail(DecodeError("the backend stopped without finishing the answer"))

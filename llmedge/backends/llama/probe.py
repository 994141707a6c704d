"""`python -m llmedge.backends.llama.probe PATH OPTIONS`: load a GGUF file as the server would,
tokenize a prompt and generate one token, then exit (run by `preflight` in a child).

Exit 0: llama.cpp coped. Exit 3: it refused the file with an error, printed on stdout. A crash
(SIGABRT, SIGSEGV) is the answer the parent looks for.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

from llmedge.backends.base import LoadOptions
from llmedge.backends.llama.backend import LlamaCppModel
from llmedge.errors import LlmedgeError
from llmedge.generation import GenerationChunk, SamplingParams

PROBE_TEXT = "Hello"
REFUSED_EXIT = 3


class _OneToken:
    """The probe's generation sink: waits for its one token, or the error."""

    def __init__(self, tokens: list[int]) -> None:
        self.tokens = tuple(tokens)
        self.params = SamplingParams(max_tokens=1, temperature=0)
        self.cancel_event = threading.Event()
        self.cancelled_at: float | None = None
        self.error: BaseException | None = None
        self.ended = threading.Event()

    @property
    def cancelled(self) -> bool:
        return False

    def put(self, chunk: GenerationChunk) -> None:
        if chunk.finish_reason is not None:
            self.ended.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.ended.set()


def probe(path: Path, options: LoadOptions) -> None:
    model = LlamaCppModel(path, options)
    try:
        sink = _OneToken(model.tokenize(PROBE_TEXT))
        model.submit(sink)
        sink.ended.wait()
        if sink.error is not None:
            raise sink.error
    finally:
        model.close()


def main(argv: list[str]) -> int:
    options = LoadOptions(**json.loads(argv[1]))
    try:
        probe(Path(argv[0]), options)
    except LlmedgeError as exc:
        print(getattr(exc, "reason", str(exc)), flush=True)
        return REFUSED_EXIT
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

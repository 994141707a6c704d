"""`python -m llmedge.backends.llama_probe PATH OPTIONS`: load a GGUF file as the server would,
tokenize a prompt and generate one token, then exit (run by `llama_preflight` in a child).

Exit 0: llama.cpp coped. Exit 3: it refused the file with an error, printed on stdout. A crash
(SIGABRT, SIGSEGV) is the answer the parent looks for.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

from llmedge.backends.base import LoadOptions
from llmedge.backends.llama_cpp import LlamaCppModel
from llmedge.errors import LlmedgeError
from llmedge.generation import SamplingParams

PROBE_TEXT = "Hello"
REFUSED_EXIT = 3


def probe(path: Path, options: LoadOptions) -> None:
    model = LlamaCppModel(path, options)
    try:
        params = SamplingParams(max_tokens=1, temperature=0)
        for _ in model.generate(model.tokenize(PROBE_TEXT), params, threading.Event()):
            pass
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

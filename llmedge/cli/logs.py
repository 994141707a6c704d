"""Quiet by default: what engines and converters print goes to a log file, not the terminal.

llama.cpp writes its warnings straight to the process's stderr (file descriptor 2), and
converters and quantizers log through Python's `logging`. While a command runs inside
`engine_log`, descriptor 2 is the log file `<home>/logs/llmedge.log` and Python's `logging`
writes there too, while `sys.stderr` (llmedge's own notes, progress bars and errors) stays on
the terminal. A command that fails says where the log is. With `--verbose` nothing is
redirected.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from llmedge.errors import LlmedgeError

LOG_NAME = "llmedge.log"
_ROTATE_BYTES = 16 << 20


def log_path(home: Path) -> Path:
    return home / "logs" / LOG_NAME


@contextlib.contextmanager
def engine_log(home: Path, verbose: bool, command: str) -> Iterator[Path | None]:
    """Run the body with engine output in the log file (unless `verbose`); yields its path."""
    if verbose:
        yield None
        return
    path = log_path(home)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size > _ROTATE_BYTES:
            os.replace(path, path.with_suffix(".log.1"))
        log = path.open("a", encoding="utf-8")
    except OSError:
        yield None  # no room for a log: the output stays on the terminal
        return
    with log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} llmedge {command}\n")
        log.flush()
        with _redirected(log):
            try:
                yield path
            except LlmedgeError as exc:
                exc.add_note(f"the engine's log is in {path}")  # printed after the error
                raise


@contextlib.contextmanager
def _redirected(log: io.TextIOWrapper) -> Iterator[None]:
    sys.stdout.flush()
    sys.stderr.flush()
    terminal_fd = os.dup(2)
    terminal = io.TextIOWrapper(os.fdopen(terminal_fd, "wb", buffering=0), write_through=True)
    saved_stderr = sys.stderr
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    saved_level = root.level
    os.dup2(log.fileno(), 2)
    sys.stderr = terminal
    root.addHandler(handler)
    root.setLevel(min(saved_level, logging.INFO) if saved_level else logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_level)
        sys.stderr = saved_stderr
        saved_stderr.flush()
        os.dup2(terminal_fd, 2)
        terminal.close()

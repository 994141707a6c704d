"""Quiet by default: what engines and converters print goes to a log file, not the terminal.

llama.cpp writes its warnings straight to the process's stderr (file descriptor 2), or through
llama-cpp-python's log callback, which prints them to `sys.stderr`; converters and quantizers
log through Python's `logging` or print warnings. While a command runs inside `engine_log`,
descriptor 2 is the log file `<home>/logs/llmedge.log`, Python's `logging` writes there too, and
`sys.stderr` sends to the terminal only what llmedge itself writes (its notes, progress bars and
errors, through rich or print) and what tqdm draws (a converter's progress bar); anything else
goes to the log. A command that fails says where the log is. With `--verbose` nothing is
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
# Modules whose writes to sys.stderr are meant for the user: llmedge's own, the progress bars.
_TO_TERMINAL = ("llmedge", "rich", "tqdm", "__main__")


class _Router(io.TextIOBase):
    """A stderr that sends each write to the terminal or the log, by the module writing it."""

    def __init__(self, terminal: io.TextIOWrapper, log: io.TextIOWrapper) -> None:
        super().__init__()
        self._terminal, self._log = terminal, log

    def write(self, text: str) -> int:
        writer = str(sys._getframe(1).f_globals.get("__name__", ""))
        ours = writer.split(".")[0] in _TO_TERMINAL
        target = self._terminal if ours else self._log
        target.write(text)
        return len(text)

    def flush(self) -> None:
        self._terminal.flush()
        self._log.flush()

    def isatty(self) -> bool:
        return self._terminal.isatty()

    def fileno(self) -> int:
        return self._terminal.fileno()


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
        start = log.tell()
        with _redirected(log):
            try:
                yield path
            except LlmedgeError as exc:
                log.flush()
                if path.stat().st_size > start:  # the engine said something about it
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
    sys.stderr = _Router(terminal, log)
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

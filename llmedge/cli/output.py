"""What the commands print: sizes and counts for people, tables, and progress bars on stderr."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def human_count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def table_console() -> Console:
    """Stdout for tables; wide when piped, so names and paths are not cut at 80 columns."""
    console = Console()
    return console if console.is_terminal else Console(width=200)


@contextmanager
def byte_progress(total: int, description: str) -> Iterator[Any]:
    """A progress bar over `total` bytes (on stderr); yields the advance callback."""
    columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


class RichReporter:
    """Progress on stderr: a bar per file (bytes, speed, ETA) and one line per step."""

    def __init__(self) -> None:
        self.console = Console(stderr=True)
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self._task: TaskID | None = None
        self._label = ""
        self._done_bytes = 0

    def __enter__(self) -> RichReporter:
        if self.console.is_terminal:  # a log file gets the step lines only
            self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.console.is_terminal:
            self._progress.stop()

    def begin(self, label: str, total_bytes: int | None, done_bytes: int = 0) -> None:
        self._label = label
        self._done_bytes = done_bytes
        self._task = self._progress.add_task(label, total=total_bytes, completed=done_bytes)
        size = human_bytes(total_bytes) if total_bytes is not None else "unknown size"
        if done_bytes:
            self.note(f"resuming {label} at {human_bytes(done_bytes)} of {size}")
        elif not self.console.is_terminal:
            self.note(f"downloading {label} ({size})")

    def advance(self, n_bytes: int) -> None:
        self._done_bytes += n_bytes
        if self._task is not None:
            self._progress.advance(self._task, n_bytes)

    def end(self) -> None:
        if self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None
            self.note(f"downloaded {self._label} ({human_bytes(self._done_bytes)})")

    def note(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False)

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
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text


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


class _Count(ProgressColumn):
    """Bytes as a download column shows them; other units as `done/total unit`."""

    def __init__(self) -> None:
        super().__init__()
        self._bytes = DownloadColumn()

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "bytes")
        if unit == "bytes":
            return self._bytes.render(task)
        total = f"{task.total:.0f}" if task.total is not None else "?"
        return Text(f"{task.completed:.0f}/{total} {unit}", style="progress.download")


class _Speed(ProgressColumn):
    """Bytes per second as a download shows them; other units per second."""

    def __init__(self) -> None:
        super().__init__()
        self._bytes = TransferSpeedColumn()

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "bytes")
        if unit == "bytes":
            return self._bytes.render(task)
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.0f} {unit}/s" if speed else "", style="progress.data.speed")


class RichReporter:
    """Progress on stderr: a bar per task (bytes, speed, ETA; or tokens) and one line per step."""

    def __init__(self) -> None:
        self.console = Console(stderr=True)
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            _Count(),
            _Speed(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self._task: TaskID | None = None
        self._label = ""
        self._unit = "bytes"
        self._done = 0

    def __enter__(self) -> RichReporter:
        if self.console.is_terminal:  # a log file gets the step lines only
            self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.console.is_terminal:
            self._progress.stop()

    def _amount(self, n: float) -> str:
        return human_bytes(n) if self._unit == "bytes" else f"{n:.0f} {self._unit}"

    def begin(self, label: str, total: int | None, done: int = 0, unit: str = "bytes") -> None:
        self._label, self._unit, self._done = label, unit, done
        self._task = self._progress.add_task(label, total=total, completed=done, unit=unit)
        size = self._amount(total) if total is not None else "unknown size"
        if done:
            self.note(f"resuming {label} at {self._amount(done)} of {size}")
        elif not self.console.is_terminal:
            self.note(f"{'downloading ' if unit == 'bytes' else ''}{label} ({size})")

    def advance(self, n: int) -> None:
        self._done += n
        if self._task is not None:
            self._progress.advance(self._task, n)

    def end(self) -> None:
        if self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None
            if self._unit == "bytes":
                self.note(f"downloaded {self._label} ({human_bytes(self._done)})")

    def note(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False)

"""How long store work (downloads, conversion, quantization) tells its caller how it goes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Reporter(Protocol):
    """Receives progress: one counted task at a time (bytes, or another `unit` such as tokens),
    plus one-line notes between tasks."""

    def begin(self, label: str, total: int | None, done: int = 0, unit: str = "bytes") -> None: ...

    def advance(self, n: int) -> None: ...

    def end(self) -> None: ...

    def note(self, text: str) -> None: ...


class CallbackReporter:
    """A reporter that only forwards byte counts to a callback (or drops everything)."""

    def __init__(self, on_progress: Callable[[int], None] | None = None) -> None:
        self._on_progress = on_progress
        self._counting_bytes = True

    def begin(self, label: str, total: int | None, done: int = 0, unit: str = "bytes") -> None:
        self._counting_bytes = unit == "bytes"
        if self._on_progress and done and self._counting_bytes:
            self._on_progress(done)

    def advance(self, n: int) -> None:
        if self._on_progress and self._counting_bytes:
            self._on_progress(n)

    def end(self) -> None:
        pass

    def note(self, text: str) -> None:
        pass


class HubBar:
    """Adapts a Reporter to the tqdm-like bar `huggingface_hub.file_download.http_get` drives."""

    def __init__(
        self,
        reporter: Reporter,
        label: str,
        *,
        total: int | None = None,
        initial: int = 0,
        **_: object,
    ) -> None:
        self._reporter = reporter
        reporter.begin(label, total, initial)

    def update(self, n: int | float = 1) -> None:
        self._reporter.advance(int(n))

    def close(self) -> None:
        self._reporter.end()

    def __enter__(self) -> HubBar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
